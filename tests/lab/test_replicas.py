"""Two registry hosts on one S3 bucket: regbox and regbox2 answer for the same name and
certificate, serve the same images, and take over from each other; a deploy over both
rolls, and stops at the first host that fails with the other still serving.

``registry.lab.test`` names both hosts (one network alias on both); a test pins it to
one host's address in a client's /etc/hosts when it must reach that one.
"""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fabric
import pytest
from invoke import Context

from lab.engine import Engine
from lab.hosts import host_spec
from lab.settings import Settings
from tasks import deploy
from tasks.errors import RemoteError
from tasks.report import Report
from tests.lab.conftest import (
    CA_FILE,
    DOMAIN,
    PASSPHRASE,
    PASSWORD,
    USER,
    Lab,
    bearer,
    bucket_objects,
    fab,
    invoke,
    lab_ip,
    login,
    must,
    pinned,
    pull_digest,
    push_image,
    s3_variant,
    sh,
    trust_by_certs_d,
)

ROOT = f"/regkit-replicas-{uuid.uuid4().hex[:8]}"
HOSTS = ("regbox", "regbox2")


@dataclass
class Replicas:
    """The lab with both registry hosts on the bucket, and each one's address."""

    lab: Lab
    ips: dict[str, str]
    deployed: str


@pytest.fixture(scope="module")
def replicas(registry: Lab, store: Lab) -> Iterator[Replicas]:
    """``fab deploy`` (every registry host: regbox, then regbox2) on the lab's bucket."""
    lab = s3_variant(store, "replicas", ROOT)
    for alias in ("client1", "client2"):
        client = lab.connect(alias)
        trust_by_certs_d(lab, client)
        login(client)
    yield Replicas(lab, {alias: lab_ip(alias) for alias in HOSTS}, must(fab(lab, "deploy")))
    must(fab(lab, "-H", "regbox2", "undeploy"))
    must(fab(registry, "-H", "regbox", "deploy"))
    lab.inventory_path.unlink()


def bucket_size(engine: Engine, store: str) -> int:
    """The bytes the gateway counts for the bucket (radosgw-admin bucket stats)."""
    stats = json.loads(engine.exec(store, "radosgw-admin bucket stats --bucket registry"))
    return int(stats["usage"].get("rgw.main", {}).get("size_actual", 0))


def change_proxy(templates: Path, line: str) -> None:
    """Add ``line`` to the ``templates`` fixture's proxy config: every host's next deploy
    builds a new proxy image (or fails its nginx -t)."""
    conf = templates / "nginx.conf.j2"
    conf.write_text(f"{conf.read_text()}\n{line}\n")


def deploy_both(lab: Lab, out: io.StringIO, parallel: bool = False) -> None:
    """``fab deploy`` (``--parallel``) over both hosts, in this process, so that the
    ``templates`` fixture's copy is what renders; its lines go to ``out``."""
    ctx = Context(config=fabric.Config(overrides={"run": {"in_stream": False}}))
    deploy.deploy_all(ctx, lab.inventory, list(HOSTS), Report(stream=out), parallel=parallel)


def test_every_registry_host_is_deployed_in_turn_and_proven(replicas: Replicas) -> None:
    out = replicas.deployed
    assert out.index("[regbox] verify: ok") < out.index("[regbox2] verify: ok"), out
    # Each host's proof went through its own proxy, not DNS's pick of the two.
    for alias in HOSTS:
        put = f"PUT /v2/regkit/probe/manifests/deploy-{alias}"
        log = f"docker logs regkit-nginx 2>&1 | grep -c '{put}'"
        assert int(sh(replicas.lab.connect(alias), log)) >= 1, alias


def test_status_shows_each_replica_and_the_bucket(replicas: Replicas) -> None:
    out = must(fab(replicas.lab, "status"))
    endpoint = replicas.lab.inventory.registry.storage.s3.endpoint  # type: ignore[union-attr]
    for alias in HOSTS:
        assert f"[{alias}] regkit-nginx: running" in out
        bucket = f"[{alias}] storage: bucket registry at {endpoint}: answers HTTP"
        assert bucket in out and "the registry reads it (/v2/ 200)" in out
    assert "replicas: 2 of 2 registry hosts serve bucket registry" in out


def test_a_push_through_regbox_pulls_through_regbox2(replicas: Replicas) -> None:
    c1, c2 = replicas.lab.connect("client1"), replicas.lab.connect("client2")
    with pinned(c1, "regbox"):
        image = push_image(c1, repo="team/replicated")
    with pinned(c2, "regbox2"):
        assert pull_digest(c2, image) == image.digest


def test_a_client_fails_over_when_one_host_is_down(replicas: Replicas) -> None:
    c1, c2 = replicas.lab.connect("client1"), replicas.lab.connect("client2")
    image = push_image(c1, repo="team/failover")
    regbox = replicas.lab.connect("regbox")
    sh(regbox, "docker stop regkit-nginx regkit-registry regkit-token >/dev/null")
    try:
        for _ in range(3):
            assert pull_digest(c2, image) == image.digest
        # A deployed host that does not serve fails status (#21), after the summary.
        shown = fab(replicas.lab, "status")
        assert shown.returncode != 0 and "regbox (see the lines above)" in shown.stderr
        assert "[regbox] status: failed (deployed, but not serving:" in shown.stdout
        assert "WARNING: 1 of 2 registry hosts serve bucket registry; not: regbox" in shown.stdout
    finally:
        # nginx last: it looks the other two up when it starts.
        sh(regbox, "docker start regkit-token regkit-registry regkit-nginx >/dev/null")


def test_an_upload_begun_on_one_host_completes_on_the_other(replicas: Replicas) -> None:
    c1 = replicas.lab.connect("client1")
    auth = bearer(c1, USER, PASSWORD, "repository:team/hop:pull,push")
    one, two = (f"--resolve {DOMAIN}:443:{replicas.ips[a]}" for a in HOSTS)
    curl = f"curl -sS -K - --cacert {CA_FILE}"
    location = "sed -n 's/^[Ll]ocation: *//p' | tr -d '\\r'"

    def url(loc: str) -> str:
        return loc if loc.startswith("https://") else f"https://{DOMAIN}{loc}"

    begun = sh(
        c1,
        f"{curl} {one} -X POST -D - -o /dev/null "
        f"https://{DOMAIN}/v2/team/hop/blobs/uploads/ | {location}",
        auth,
    )
    digest = "sha256:" + sh(
        c1, "head -c 1048576 /dev/urandom > /tmp/hop && sha256sum < /tmp/hop | cut -d' ' -f1"
    )
    patched = sh(
        c1,
        f"{curl} {two} -X PATCH -H 'Content-Type: application/octet-stream' "
        f"--data-binary @/tmp/hop -D - -o /dev/null '{url(begun)}' | {location}",
        auth,
    )
    separator = "&" if "?" in patched else "?"
    done = sh(
        c1,
        f"{curl} {two} -X PUT -o /dev/null -w '%{{http_code}}' "
        f"'{url(patched)}{separator}digest={digest}'",
        auth,
    )
    assert done == "201"
    head = f"{curl} {one} -I -o /dev/null -w '%{{http_code}}'"
    assert sh(c1, f"{head} https://{DOMAIN}/v2/team/hop/blobs/{digest}", auth) == "200"


def test_gc_on_the_shared_bucket_frees_it_and_no_replica_serves_a_deleted_blob(
    replicas: Replicas,
) -> None:
    lab, blobs = replicas.lab, f"{ROOT}/docker/registry/v2/blobs/"
    c1, c2 = lab.connect("client1"), lab.connect("client2")
    curl = f"curl -sS -K - --cacert {CA_FILE}"
    url = f"https://{DOMAIN}/v2/team/collected"
    must(fab(lab, "setrole", "-u", USER, "-r", "admin"))
    try:
        image = push_image(c1, mib=4, repo="team/collected")
        auth = bearer(c1, USER, PASSWORD, "repository:team/collected:pull,delete")
        accept = "-H 'Accept: application/vnd.docker.distribution.manifest.v2+json'"
        manifest = json.loads(sh(c1, f"{curl} {accept} {url}/manifests/{image.digest}", auth))
        layer = manifest["layers"][0]["digest"]
        for alias in HOSTS:  # each replica caches the layer's descriptor
            with pinned(c2, alias):
                assert pull_digest(c2, image) == image.digest
        before = sum(bucket_objects(lab, blobs).values())
        used = bucket_size(Engine(Settings()), host_spec("store").container)
        delete = f"{curl} -X DELETE -o /dev/null -w '%{{http_code}}' {url}/manifests/{image.digest}"
        assert sh(c1, delete, auth) == "202"
        out = must(fab(lab, "gc"))
    finally:
        must(fab(lab, "setrole", "-u", USER, "-r", "push"))
    assert "regbox, regbox2 share bucket" in out
    assert "[regbox] read-only while collecting (regbox, regbox2)" in out
    assert "[regbox2] read-only: changed (while regbox collected; writable again" in out
    freed = before - sum(bucket_objects(lab, blobs).values())
    assert freed >= 4 * 1024 * 1024, (before, freed)
    # And the gateway's own space, once its collection ran (it waits a minute otherwise).
    engine, store = Engine(Settings()), host_spec("store").container
    engine.exec(store, "radosgw-admin gc process --include-all")
    assert bucket_size(engine, store) <= used - 4 * 1024 * 1024, (used, bucket_size(engine, store))
    for alias in HOSTS:
        resolve = f"--resolve {DOMAIN}:443:{replicas.ips[alias]}"
        head = f"{curl} {resolve} -I -o /dev/null -w '%{{http_code}}' {url}/blobs/{layer}"
        assert sh(c1, head, auth) == "404", alias


def test_a_new_certificate_deploys_to_every_host_at_once(replicas: Replicas) -> None:
    lab = replicas.lab
    must(invoke("pki.renew", env={**lab.env, "REGISTRY_CA_PASSPHRASE": PASSPHRASE}))
    out = must(fab(lab, "deploy", "--parallel"))
    for alias in HOSTS:
        assert f"[{alias}] file /etc/regkit/tls/server.crt: changed" in out
        assert f"[{alias}] nginx reload: changed (certificate changed)" in out
        assert f"[{alias}] container regkit-nginx: unchanged" in out


def test_parallel_is_refused_where_a_container_would_be_recreated(
    replicas: Replicas, templates: Path
) -> None:
    lab = replicas.lab
    change_proxy(templates, "# a new proxy image: recreated on every host")
    out = io.StringIO()
    with pytest.raises(RemoteError, match=r"deploy failed on regbox, regbox2$"):
        deploy_both(lab, out, parallel=True)
    for alias in HOSTS:
        refused = f"[{alias}] deploy: failed (--parallel, but this deploy recreates regkit-nginx"
        assert refused in out.getvalue()
    assert (
        ": changed" not in out.getvalue() and "0 changed, 1 unchanged, 2 failed" in out.getvalue()
    )


def test_a_rolling_proxy_change_fails_no_pull_of_a_client(
    replicas: Replicas, templates: Path
) -> None:
    lab = replicas.lab
    image = push_image(lab.connect("client1"), repo="team/rolled")
    change_proxy(templates, "# a proxy change: a new image on every host")
    loop = (
        "ok=0; failed=0; while [ ! -e /tmp/roll-done ]; do "
        f"docker rmi -f {image.ref} >/dev/null 2>&1; "
        f"if docker pull -q {image.ref} >/dev/null 2>>/tmp/roll-errors; "
        "then ok=$((ok+1)); else failed=$((failed+1)); fi; echo $ok > /tmp/roll-ok; done; "
        "rm -f /tmp/roll-done /tmp/roll-ok; echo $ok $failed"
    )
    c2 = lab.connect("client2")
    sh(c2, "rm -f /tmp/roll-done /tmp/roll-errors /tmp/roll-ok")
    counts: list[str] = []
    puller = threading.Thread(target=lambda: counts.append(sh(lab.connect("client2"), loop)))
    puller.start()
    # The roll starts once the loop pulls: every recreation happens while it runs.
    sh(c2, "for _ in $(seq 120); do [ -s /tmp/roll-ok ] && exit 0; sleep 0.5; done; exit 1")
    out = io.StringIO()
    try:
        deploy_both(lab, out)
    finally:
        sh(c2, "touch /tmp/roll-done")
        puller.join(timeout=120)
    for alias in HOSTS:
        assert f"[{alias}] container regkit-nginx: changed (recreated" in out.getvalue()
    ok, failed = (int(n) for n in counts[0].split())
    assert failed == 0, (counts, sh(c2, "cat /tmp/roll-errors"))
    assert ok >= 2, counts


def test_a_broken_template_stops_the_roll_with_the_other_host_serving(
    replicas: Replicas, templates: Path
) -> None:
    lab = replicas.lab
    image = push_image(lab.connect("client1"), repo="team/roll")
    change_proxy(templates, "this is not nginx;")
    out = io.StringIO()
    with pytest.raises(RemoteError, match=r"deploy failed on regbox$"):
        deploy_both(lab, out)
    lines = out.getvalue()
    assert "[regbox] deploy: failed (" in lines
    assert "[regbox2] deploy: skipped (not started: the roll stopped at regbox" in lines
    c2 = lab.connect("client2")
    for alias in HOSTS:
        with pinned(c2, alias):
            assert pull_digest(c2, image) == image.digest
