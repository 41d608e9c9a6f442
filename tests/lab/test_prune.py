"""`fab prune` (issue #16) on the lab: retention rules against images with known
creation dates, pushed through the registry's API, pulled by real docker clients."""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex

import pytest
import yaml

from lab.settings import PUSH_IMAGE
from tasks import catalog, prune, users
from tasks.inventory import ENV_VAR, RetentionRule
from tasks.layout import PRUNED
from tasks.plans import prune as prune_plan
from tasks.report import Report
from tests.lab.conftest import (
    CA_FILE,
    DOMAIN,
    Lab,
    bearer,
    fab,
    login,
    must,
    sh,
    target,
    trust_by_certs_d,
    wait_for_registry,
)

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
NOW = dt.datetime.now(dt.UTC)

PUSH = PUSH_IMAGE.read_text()


def push(lab: Lab, repo: str, tags: str, days_old: int) -> str:
    c1 = lab.connect("client1")
    created = (NOW - dt.timedelta(days=days_old)).isoformat().replace("+00:00", "Z")
    admin = users.probe_credential(lab.inventory)[0]
    env = " ".join(
        f"{k}={shlex.quote(v)}"
        for k, v in {
            "CREATED": created,
            "REPO": repo,
            "TAGS": tags,
            "CA": CA_FILE,
            "URL": f"https://{DOMAIN}",
            "MT": MANIFEST,
        }.items()
    )
    auth = bearer(c1, users.PROBE_USER, admin, f"repository:{repo}:pull,push")
    return "sha256:" + sh(c1, f"export {env}; {PUSH}", auth).splitlines()[-1]


INDEX = "application/vnd.oci.image.index.v1+json"
RULES = [
    {"repositories": ["prune/app"], "keep_last": 3, "keep_tags": ["^release-"]},
    {"repositories": ["prune/twins"], "keep_last": 0, "keep_tags": ["^keep$"]},
    {"repositories": ["prune/multi"], "keep_last": 1},
]


def push_index(lab: Lab, repo: str, tag: str, platforms: dict[str, str]) -> str:
    """A multi-arch index of ``platforms`` (architecture -> manifest digest) as ``tag``."""
    c1 = lab.connect("client1")
    admin = users.probe_credential(lab.inventory)[0]
    auth = bearer(c1, users.PROBE_USER, admin, f"repository:{repo}:pull,push")
    base = f"curl -sSf -K - --cacert {CA_FILE} https://{DOMAIN}/v2/{repo}/manifests"
    manifests = []
    for arch, digest in platforms.items():
        head = sh(c1, f"{base}/{digest} -I -H 'Accept: {MANIFEST}' | tr -d '\\r'", auth)
        size = int(
            next(h.split()[1] for h in head.splitlines() if h.lower().startswith("content-length"))
        )
        manifests.append({"mediaType": MANIFEST, "digest": digest, "size": size,
                          "platform": {"os": "linux", "architecture": arch}})  # fmt: skip
    index = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests})
    head = sh(
        c1,
        f"cat > /tmp/auth && printf '%s' {shlex.quote(index)} > /tmp/index.json && "
        f"{base.replace('-K -', '-K /tmp/auth')}/{tag} -X PUT -H 'Content-Type: {INDEX}' "
        "--data-binary @/tmp/index.json -D - -o /dev/null | tr -d '\\r'",
        auth,
    )
    return next(
        h.split()[1] for h in head.splitlines() if h.lower().startswith("docker-content-digest")
    )


@pytest.fixture(scope="module")
def pruned(registry: Lab) -> dict[str, object]:
    """12 builds a day apart and an old release in prune/app; two tags on one digest
    (one kept) and an old tag in prune/twins; an inventory with the rules beside the lab's."""
    for alias in ("client1", "client2"):
        conn = registry.connect(alias)
        trust_by_certs_d(registry, conn)
        login(conn)
    digests = {f"b{n:02}": push(registry, "prune/app", f"b{n:02}", days_old=n) for n in range(12)}
    digests["release-1"] = push(registry, "prune/app", "release-1", days_old=40)
    twins = push(registry, "prune/twins", "keep alias", days_old=90)
    gone = push(registry, "prune/twins", "gone", days_old=80)
    # An index of two old per-platform images, each also tagged, and a fresh image.
    platforms = {"amd64": push(registry, "prune/multi", "amd", days_old=90),
                 "arm64": push(registry, "prune/multi", "arm", days_old=90)}  # fmt: skip
    push_index(registry, "prune/multi", "multi", platforms)
    push(registry, "prune/multi", "fresh", days_old=0)
    data = yaml.safe_load(registry.inventory_path.read_text())
    data["retention"] = RULES
    path = registry.inventory_path.with_name("inventory-prune.yaml")
    path.write_text(yaml.safe_dump(data))
    return {"app": digests, "twins": twins, "gone": gone, "env": {ENV_VAR: str(path)}}


def data_state(lab: Lab) -> str:
    return sh(
        lab.connect("regbox"),
        f"cd {lab.inventory.registry.data_dir} && "
        "find . -type f | sort | xargs sha256sum | sha256sum",
    )


def data_kib(lab: Lab) -> int:
    return int(sh(lab.connect("regbox"), f"du -sk {lab.inventory.registry.data_dir} | cut -f1"))


def pulls(lab: Lab, ref: str) -> str:
    return sh(
        lab.connect("client2"),
        f"docker rmi -f {ref} >/dev/null 2>&1; docker pull -q {ref} >/dev/null 2>&1 "
        f"&& docker inspect --format '{{{{index .RepoDigests 0}}}}' {ref} || echo refused",
    )


def test_a_dry_run_changes_nothing(registry: Lab, pruned: dict) -> None:
    before = data_state(registry)
    out = must(fab(registry, "-H", "regbox", "prune", "--dry-run", env=pruned["env"]))
    assert "delete: older than what the rule keeps" in out
    assert "10 tags (10 manifests" in out
    assert data_state(registry) == before


def test_the_json_plan_has_one_line_per_tag(registry: Lab, pruned: dict) -> None:
    before = data_state(registry)
    done = fab(registry, "-H", "regbox", "prune", "--dry-run", "--json", env=pruned["env"])
    lines = [json.loads(line) for line in must(done).splitlines()]
    app = {line["tag"]: line for line in lines if line["repository"] == "prune/app"}
    assert sorted(t for t, line in app.items() if line["decision"] == "delete") == [
        f"b{n:02}" for n in range(3, 12)
    ]
    assert app["release-1"] == {
        "host": "regbox",
        "repository": "prune/app",
        "tag": "release-1",
        "digest": pruned["app"]["release-1"],
        "created": app["release-1"]["created"],
        "size": app["release-1"]["size"],
        "rule": 1,
        "decision": "keep",
        "reason": "keep_tags",
    }
    assert prune_plan.parse_time(app["release-1"]["created"]).date() == (
        (NOW - dt.timedelta(days=40)).date()
    )
    assert "[regbox] prune: unchanged (dry run)" in done.stderr
    assert data_state(registry) == before


def test_prune_keeps_the_newest_and_the_releases_and_frees_the_rest(
    registry: Lab, pruned: dict
) -> None:
    before = data_kib(registry)
    done = fab(registry, "-H", "regbox", "prune", "--yes", env=pruned["env"])
    must(done)
    # The plan goes to stdout; how each host went, to stderr.
    assert "[regbox] prune: changed (10 manifests deleted, 0 kept (moved))" in done.stderr
    assert "[regbox] gc: changed" in done.stderr
    tags = json.loads(must(fab(registry, "-H", "regbox", "catalog", "--json")))
    left = sorted(t["tag"] for t in tags if t["repository"] == "prune/app")
    assert left == ["b00", "b01", "b02", "release-1"]
    for tag in left:
        assert pulls(registry, f"{DOMAIN}/prune/app:{tag}").endswith(pruned["app"][tag])
    assert pulls(registry, f"{DOMAIN}/prune/app:b05") == "refused"
    # The twins' digest stays with both its tags; the old tag went.
    twins = sorted(t["tag"] for t in tags if t["repository"] == "prune/twins")
    assert twins == ["alias", "keep"]
    # The index stays whole: its platforms' old tags are kept with it, and it pulls.
    multi = sorted(t["tag"] for t in tags if t["repository"] == "prune/multi")
    assert multi == ["amd", "arm", "fresh", "multi"]
    assert pulls(registry, f"{DOMAIN}/prune/multi:multi") != "refused"
    # Nine deleted builds, each with its own 64 KiB of random layer.
    assert before - data_kib(registry) >= 9 * 64
    # The host keeps a root-owned record of the run, and status shows it.
    regbox = registry.connect("regbox")
    assert sh(regbox, f"stat -c '%u %g %a' {PRUNED}") == "0 0 644"
    status = must(fab(registry, "-H", "regbox", "status"))
    line = next(x for x in status.splitlines() if x.startswith("[regbox] prune: "))
    assert re.fullmatch(
        r"\[regbox\] prune: last ran \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ: "
        r"10 manifests deleted, [\d.]+ (KiB|MiB) freed",
        line,
    ), line
    # Run again with nothing changed: nothing is deleted, and the run says so.
    kept = data_state(registry)
    again = fab(registry, "-H", "regbox", "prune", "--yes", env=pruned["env"])
    must(again)
    assert "[regbox] prune: unchanged (nothing to delete, 0 kept (moved))" in again.stderr
    assert again.stderr.strip().splitlines()[-1] == "0 changed, 1 unchanged: no changes"
    assert data_state(registry) == kept
    status = must(fab(registry, "-H", "regbox", "status"))
    assert ": 0 manifests deleted, 0 B freed" in status


def test_a_tag_pushed_again_while_prune_runs_keeps_its_new_digest(
    registry: Lab, pruned: dict
) -> None:
    """Between the plan and the deletions a candidate tag is pushed anew: its manifest
    is kept, and the tag pulls with the new digest."""
    old = push(registry, "prune/race", "old", days_old=50)
    push(registry, "prune/race", "new", days_old=0)
    rules = [RetentionRule(repositories=["prune/race"], keep_last=1)]
    now = dt.datetime.now(dt.UTC)
    report = Report()
    with catalog.api_session(registry.inventory, target(registry, "regbox")) as api:
        plan = prune_plan.plan(rules, prune.images(api), now)
        assert [(d.repository, d.digest) for d in plan.deletions] == [("prune/race", old)]
        again = push(registry, "prune/race", "old", days_old=0)
        assert prune.apply(api, "regbox", plan, report) == (0, 1)
    assert pulls(registry, f"{DOMAIN}/prune/race:old").endswith(again)


def test_an_unattended_prune_that_fails_exits_non_zero_and_says_why(
    registry: Lab, pruned: dict
) -> None:
    """As from cron: the proxy is down, so prune cannot read the registry."""
    regbox = registry.connect("regbox")
    sh(regbox, "docker stop regkit-nginx >/dev/null")
    try:
        done = fab(registry, "-H", "regbox", "prune", "--yes", env=pruned["env"])
    finally:
        sh(regbox, "docker start regkit-nginx >/dev/null")
        wait_for_registry(registry.connect("client1"))
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    tail = done.stderr.strip().splitlines()[-3:]
    assert tail[0].startswith("[regbox] prune: failed ("), tail
    assert tail[1] == "0 changed, 0 unchanged, 1 failed"
    assert tail[2] == "error: prune failed on regbox"
