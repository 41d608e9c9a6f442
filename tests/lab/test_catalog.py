"""What was pushed: `fab catalog` and the browser page, checked against the registry's API.

The page is driven in Debian's chromium (headless, through Playwright) from this
machine, reaching regbox on the lab network, logged in with basic auth.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
from collections import Counter
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Dialog

from lab.settings import PUSH_IMAGE
from tasks import catalog, users
from tasks.catalog import MANIFEST_TYPES
from tasks.layout import PROBE_REPO
from tests.lab.conftest import (
    CA_FILE,
    DOMAIN,
    PASSWORD,
    REPO,
    USER,
    Lab,
    Pushed,
    bearer,
    fab,
    login,
    must,
    push_image,
    sh,
    target,
    trust_by_certs_d,
)
from tests.lab.pages import expand, open_page

ARTIFACTS = REPO / "test-artifacts"
MANY = 120  # more than one API page (100) and more than the page shows at first (50)
# The API calls use the deploy's probe login (an admin), a token per call: `tok SCOPE...`.
CA = f"/etc/docker/certs.d/{DOMAIN}/ca.crt"
TOK = (
    'tok() { q=""; for s in "$@"; do q="$q&scope=$s"; done; '
    f'printf \'user = "{users.PROBE_USER}:%s"\\n\' "$(cat /root/.regkit-test-pw)" '
    f'| curl -sS --fail -K - --cacert {CA} "https://{DOMAIN}/auth/token?service={DOMAIN}$q" '
    '| sed -n \'s/.*"token": *"\\([^"]*\\)".*/\\1/p\'; }; '
)


def curl(*scopes: str) -> str:
    """A shell prefix: curl with a token for ``scopes``, before the registry's path."""
    return (
        f'{TOK}curl -sS --fail --cacert {CA} -H "Authorization: Bearer $(tok {" ".join(scopes)})" '
        f"https://{DOMAIN}"
    )


def token_once(*scopes: str) -> tuple[str, str]:
    """(a shell line that asks for a token for ``scopes`` once, a curl prefix that uses
    it): a loop of calls reuses one token, as a client does (nginx limits logins)."""
    return (
        f"{TOK}t=$(tok {' '.join(scopes)}); ",
        f'curl -sS --fail --cacert {CA} -H "Authorization: Bearer $t" https://{DOMAIN}',
    )


INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def split_ref(image: Pushed) -> tuple[str, str]:
    repo, tag = image.ref.removeprefix(f"{DOMAIN}/").split(":")
    return repo, tag


@pytest.fixture(scope="module")
def pushed(registry: Lab) -> dict[str, Pushed]:
    """Two images, a repository with many tags, and a multi-arch index, from client1."""
    c1 = registry.connect("client1")
    trust_by_certs_d(registry, c1)
    login(c1)
    sh(
        c1,
        "umask 077 && cat > /root/.regkit-test-pw",
        users.probe_credential(registry.inventory)[0],
    )
    images = {"app": push_image(c1), "app2": push_image(c1)}
    repo, _ = split_ref(images["app"])
    pull, many = f"repository:{repo}:pull", "repository:team/many:pull,push"
    manifest = sh(
        c1, f"{curl(pull)}/v2/{repo}/manifests/{images['app'].digest} -H 'Accept: {MANIFEST}'"
    )
    parsed = json.loads(manifest)
    blobs = [parsed["config"]["digest"], *(layer["digest"] for layer in parsed["layers"])]
    mounts = " && ".join(
        f"{curl(many, pull)}'/v2/team/many/blobs/uploads/?mount={d}&from={repo}' "
        "-X POST -o /dev/null"
        for d in blobs
    )
    ask, put = token_once(many)
    sh(
        c1,
        f"{mounts} && cat > /tmp/m.json && {ask}for i in $(seq -w 1 {MANY}); do "
        f"{put}/v2/team/many/manifests/v$i -X PUT -H 'Content-Type: {MANIFEST}' "
        "--data-binary @/tmp/m.json -o /dev/null || exit 1; done",
        manifest,
    )
    platforms = [("linux", "amd64"), ("linux", "arm64")]
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [
                {
                    "mediaType": MANIFEST,
                    "digest": images["app"].digest,
                    "size": len(manifest.encode()),
                    "platform": {"os": os, "architecture": arch},
                }
                for os, arch in platforms
            ],
        }
    )
    headers = sh(
        c1,
        f"cat > /tmp/i.json && {curl(f'repository:{repo}:pull,push')}/v2/{repo}/manifests/multi "
        "-X PUT "
        f"-H 'Content-Type: {INDEX}' --data-binary @/tmp/i.json -D - -o /dev/null",
        index,
    )
    digest = next(
        line.split()[1]
        for line in headers.splitlines()
        if line.lower().startswith("docker-content-digest")
    )
    images["multi"] = Pushed(f"{DOMAIN}/{repo}:multi", digest)
    return images


def api_tags(registry: Lab) -> dict[tuple[str, str], str]:
    """(repository, tag) -> digest, straight from the registry's API (curl on client1)."""
    c1 = registry.connect("client1")
    catalog = json.loads(sh(c1, f"{curl('registry:catalog:*')}/v2/_catalog?n=1000"))
    heads = []
    for repo in catalog["repositories"]:
        ask, pull = token_once(f"repository:{repo}:pull")
        # A repository whose tags were all deleted lists none (null); one of blobs alone
        # answers 404 (fab catalog skips both).
        listed = sh(c1, f"{ask}{pull}/v2/{repo}/tags/list?n=1000 || echo '{{}}'")
        tags = json.loads(listed).get("tags") or []
        heads += [ask] + [
            f"echo {repo} {tag} $({pull}/v2/{repo}/manifests/{tag} -I "
            f"-H 'Accept: {MANIFEST_TYPES}' "
            "| grep -i '^docker-content-digest' | cut -d' ' -f2 | tr -d '\\r')"
            for tag in tags
        ]
    out = sh(c1, "\n".join(heads))
    return {(r, t): d for r, t, d in (line.split() for line in out.splitlines())}


def test_fab_catalog_matches_the_registry_api(registry: Lab, pushed: dict[str, Pushed]) -> None:
    out = must(fab(registry, "-H", "regbox", "catalog", "--json"))
    listed = {(t["repository"], t["tag"]): t for t in json.loads(out)}
    # Everything the API lists but the deploy's own probe, which catalog leaves out.
    api = {key: digest for key, digest in api_tags(registry).items() if key[0] != PROBE_REPO}
    assert {key: t["digest"] for key, t in listed.items()} == api
    app = listed[split_ref(pushed["app"])]
    assert app["digest"] == pushed["app"].digest
    assert app["platforms"] == ["linux/amd64"]
    assert app["size"] > 1024 * 1024
    assert app["created"]
    multi = listed[(split_ref(pushed["app"])[0], "multi")]
    assert multi["index"] and multi["platforms"] == ["linux/amd64", "linux/arm64"]
    assert multi["digest"] == pushed["multi"].digest
    assert len([key for key in listed if key[0] == "team/many"]) == MANY


def test_fab_catalog_table(registry: Lab, pushed: dict[str, Pushed]) -> None:
    lines = must(fab(registry, "-H", "regbox", "catalog")).splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "DIGEST", "SIZE", "PLATFORM", "CREATED"]
    repo, tag = split_ref(pushed["app"])
    row = next(line for line in lines if line.split()[:2] == [repo, tag])
    assert pushed["app"].digest[:19] in row and "linux/amd64" in row


def test_page_shows_repositories_tags_and_digests(
    browser: Browser, pushed: dict[str, Pushed]
) -> None:
    page = open_page(browser)
    page.goto(f"https://{DOMAIN}/")
    repo, tag = split_ref(pushed["app"])
    details = expand(page, repo)
    row = details.locator(f'tr[data-tag="{tag}"]')
    row.locator("td.digest:not(.muted)").wait_for(timeout=20000)
    assert row.locator("td.digest").inner_text() == pushed["app"].digest
    assert row.locator("td.platform").inner_text() == "linux/amd64"
    assert row.locator("td.size").inner_text() == "1.0 MiB"
    assert row.locator("td.pull code").inner_text() == f"docker pull {pushed['app'].ref}"
    multi = details.locator('tr[data-tag="multi"]')
    multi.locator("td.digest:not(.muted)").wait_for(timeout=20000)
    assert multi.locator("td.digest").inner_text() == pushed["multi"].digest
    assert multi.locator("td.platform").inner_text() == "multi-arch index: linux/amd64, linux/arm64"

    many = expand(page, "team/many")
    many.locator(".count").filter(has_text=f"{MANY} tags").wait_for(timeout=20000)
    assert many.locator("tbody tr").count() == 50
    many.locator("button.more").click()
    many.locator("tbody tr").nth(99).wait_for(timeout=20000)
    page.evaluate("window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "catalog.png"))
    assert (ARTIFACTS / "catalog.png").stat().st_size > 10_000


def test_page_with_an_empty_registry(browser: Browser) -> None:
    who = {"user": USER, "role": "push", "service": DOMAIN, "repositories": []}
    page = open_page(browser, {"**/auth/catalog*": lambda r: r.fulfill(json=who)})
    page.goto(f"https://{DOMAIN}/")
    status = page.locator("#status")
    status.filter(has_text="No repositories yet").wait_for(timeout=20000)
    assert f"docker push {DOMAIN}/<name>:<tag>" in status.inner_text()


def test_page_shows_an_api_error(browser: Browser) -> None:
    page = open_page(browser, {"**/auth/catalog*": lambda r: r.fulfill(status=503, body="down")})
    page.goto(f"https://{DOMAIN}/")
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=20000)
    assert "503" in error.inner_text()


def test_page_refuses_a_wrong_password(browser: Browser) -> None:
    context = browser.new_context(
        ignore_https_errors=True, http_credentials={"username": USER, "password": "wrong"}
    )
    page = context.new_page()
    response = page.goto(f"https://{DOMAIN}/")
    assert response is not None and response.status == 401
    assert page.locator("#repositories").count() == 0


ADMIN = ("catalog-admin", "catalog-admin-pass-1")


@pytest.fixture(scope="module")
def twins(registry: Lab, pushed: dict[str, Pushed]) -> tuple[str, str]:
    """An admin, and team/twins with two tags of one digest (and the digest)."""
    must(fab(registry, "adduser", "--username", ADMIN[0], "--password-stdin",
             "--role", "admin", stdin=ADMIN[1] + "\n"))  # fmt: skip
    c1 = registry.connect("client1")
    repo, _ = split_ref(pushed["app"])
    pull, twins = f"repository:{repo}:pull", "repository:team/twins:pull,push"
    manifest = sh(
        c1, f"{curl(pull)}/v2/{repo}/manifests/{pushed['app'].digest} -H 'Accept: {MANIFEST}'"
    )
    blobs = [json.loads(manifest)["config"]["digest"]]
    blobs += [layer["digest"] for layer in json.loads(manifest)["layers"]]
    mounts = " && ".join(
        f"{curl(twins, pull)}'/v2/team/twins/blobs/uploads/?mount={d}&from={repo}' "
        "-X POST -o /dev/null"
        for d in blobs
    )
    sh(
        c1,
        f"{mounts} && cat > /tmp/t.json && for t in one two; do "
        f"{curl(twins)}/v2/team/twins/manifests/$t -X PUT -H 'Content-Type: {MANIFEST}' "
        "--data-binary @/tmp/t.json -o /dev/null || exit 1; done",
        manifest,
    )
    return "team/twins", pushed["app"].digest


def test_only_an_admin_gets_a_delete_control_that_names_the_twin_tags(
    browser: Browser, twins: tuple[str, str], registry: Lab
) -> None:
    repo, digest = twins
    plain = open_page(browser)
    plain.goto(f"https://{DOMAIN}/")
    row = expand(plain, repo).locator('tr[data-tag="one"]')
    row.locator("td.digest:not(.muted)").wait_for(timeout=20000)
    assert row.locator("button.delete").count() == 0
    assert plain.locator("#who").inner_text() == f"{USER} (push)"

    page = open_page(browser, login=ADMIN)
    page.goto(f"https://{DOMAIN}/")
    details = expand(page, repo)
    row = details.locator('tr[data-tag="one"]')
    row.locator("button.delete:enabled").wait_for(timeout=20000)
    asked: list[str] = []

    def answer(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    row.locator("button.delete").click()
    details.locator("tbody tr").first.wait_for(state="detached", timeout=20000)
    assert len(asked) == 1 and digest in asked[0]
    assert "share that digest and are deleted with it: two." in asked[0]
    gone = sh(
        registry.connect("client1"),
        f"{curl(f'repository:{repo}:pull')}/v2/{repo}/manifests/two -I -o /dev/null "
        f"-H 'Accept: {MANIFEST}' -w '%{{http_code}}' || true",
    )
    assert gone.endswith("404")


@pytest.mark.parametrize("width", [1000, 1300])
def test_nothing_overflows_its_card(
    browser: Browser, pushed: dict[str, Pushed], twins: tuple[str, str], width: int
) -> None:
    page = open_page(browser, login=ADMIN, width=width)
    page.goto(f"https://{DOMAIN}/")
    repo, tag = split_ref(pushed["app"])
    details = expand(page, repo)
    details.locator(f'tr[data-tag="{tag}"] td.digest:not(.muted)').wait_for(timeout=20000)
    overflow = page.evaluate(
        """(repo) => {
          const card = document.querySelector(`details[data-repository="${repo}"]`);
          const right = card.getBoundingClientRect().right;
          return [...card.querySelectorAll("td, th")]
            .filter((cell) => cell.getBoundingClientRect().right > right + 0.5)
            .map((cell) => cell.className || cell.textContent);
        }""",
        repo,
    )
    assert overflow == []
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_a_repository_with_blobs_only_lists_no_tags(
    registry: Lab, pushed: dict[str, Pushed]
) -> None:
    """An upload that never got a manifest: the catalog names the repository, its tag
    list answers 404; `fab catalog` lists the rest and no tag of it."""
    push = curl("repository:team/blobsonly:pull,push")
    sh(
        registry.connect("client1"),
        "head -c 4096 /dev/urandom > /tmp/b && d=$(sha256sum < /tmp/b | cut -c1-64) && "
        f"loc=$({push}/v2/team/blobsonly/blobs/uploads/ -X POST -D - -o /dev/null "
        "| tr -d '\\r' | sed -n 's/^location: *//Ip') && "
        f'{push}"${{loc#https://{DOMAIN}}}&digest=sha256:$d" -X PUT '
        "-H 'Content-Type: application/octet-stream' --data-binary @/tmp/b -o /dev/null",
    )
    catalog = sh(registry.connect("client1"), f"{curl('registry:catalog:*')}/v2/_catalog")
    assert "team/blobsonly" in json.loads(catalog)["repositories"]
    listed = json.loads(must(fab(registry, "-H", "regbox", "catalog", "--json")))
    assert not [t for t in listed if t["repository"] == "team/blobsonly"]
    assert [t for t in listed if t["repository"] == split_ref(pushed["app"])[0]]


def test_a_long_api_session_ends_cleanly_on_a_quick_ssh_socket(registry: Lab) -> None:
    """More calls than nginx serves on one connection (keepalive_requests, 1000): the
    connection it closes is replaced and the session ends without error. The SSH
    socket has TCP_NODELAY: without it a call carrying a token (over 1 KiB, two SSH
    packets) waits for the host's delayed ACK, 40 ms (prune read 10 tags a second)."""
    t = target(registry, "regbox")
    assert t.conn.transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    # AES-GCM is asked for first, and Debian's sshd agrees (docs/benchmarks.md: backups).
    assert t.conn.transport.remote_cipher == "aes128-gcm@openssh.com"
    with catalog.api_session(registry.inventory, t) as api:
        token = api.bearer("registry:catalog:*")
        assert len(token) > 1024
        statuses = Counter(api.call("GET", "/v2/", token)[0] for _ in range(1100))
    assert statuses == {200: 1100}


HOSTILE, UNTAGGED = "team/hostile", "team/untagged"
# Configs as whoever can push may write them (the registry never reads a config): escape
# sequences that set the terminal's title and rewrite the line as a fake row, a bidi
# override, a creation date that is a number, and a config that is not an object.
CONFIGS: dict[str, object] = {
    "evil": {
        "os": "linux",
        "architecture": "amd64\x1b]0;pwned\x07\r\x1b[2Kteam/fake  1.0",
        "created": "\u202e\x1b[31m2026-01-01T00:00:00Z",
    },
    "intdate": {"os": "linux", "architecture": "amd64", "created": 12345},
    "notobject": ["linux", "amd64"],
}
# What a terminal would obey, raw: C0 and C1 controls but the newline, DEL, bidi controls.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def push_config(lab: Lab, repo: str, tag: str = "", config: object = None) -> str:
    """As alice (a pusher), from client1: an image ``repo:tag`` of one layer whose config is
    ``config`` (as JSON: ASCII, its control characters JSON escapes), its digest returned;
    without ``tag``, its blobs alone (a repository without tags)."""
    env = {"REPO": repo, "TAGS": tag, "CONFIG": json.dumps(config), "CA": CA_FILE,
           "URL": f"https://{DOMAIN}", "MT": MANIFEST}  # fmt: skip
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    auth = bearer(lab.connect("client1"), USER, PASSWORD, f"repository:{repo}:pull,push")
    out = sh(lab.connect("client1"), f"export {exports}; {PUSH_IMAGE.read_text()}", auth)
    return "sha256:" + out.splitlines()[-1]


@pytest.fixture(scope="module")
def hostile(registry: Lab) -> Iterator[dict[str, str]]:
    """``HOSTILE`` with a tag per config of ``CONFIGS`` (tag -> digest), and ``UNTAGGED``
    with a blob and no tag; the hostile tags are deleted afterwards (by digest)."""
    trust_by_certs_d(registry, registry.connect("client1"))
    digests = {tag: push_config(registry, HOSTILE, tag, config) for tag, config in CONFIGS.items()}
    push_config(registry, UNTAGGED)
    yield digests
    c1 = registry.connect("client1")
    admin = users.probe_credential(registry.inventory)[0]
    auth = bearer(c1, users.PROBE_USER, admin, f"repository:{HOSTILE}:delete")
    base = f"curl -sSf -K /tmp/auth --cacert {CA_FILE} -X DELETE -o /dev/null"
    deletes = [f"{base} https://{DOMAIN}/v2/{HOSTILE}/manifests/{d}" for d in digests.values()]
    sh(c1, " && ".join(["cat > /tmp/auth", *deletes, "rm /tmp/auth"]), auth)


def test_a_pushers_hostile_configs_and_an_untagged_repository_list_cleanly(
    registry: Lab, hostile: dict[str, str]
) -> None:
    """Issue #22, point 5: `fab catalog` prints one line per tag, the hostile fields as
    escapes (nothing a terminal obeys), a date of another type as none, no traceback,
    exit 0; the repository without tags is skipped with one line saying why."""
    proc = fab(registry, "-H", "regbox", "catalog")
    out = must(proc)
    assert not RAW.search(out + proc.stderr)
    assert "Traceback" not in proc.stderr
    listed = json.loads(must(fab(registry, "-H", "regbox", "catalog", "--json")))
    lines = out.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "DIGEST", "SIZE", "PLATFORM", "CREATED"]
    assert len(lines) == 1 + len(listed)  # a line per tag, none broken or made up
    rows = {line.split()[1]: line for line in lines[1:] if line.split()[0] == HOSTILE}
    assert sorted(rows) == sorted(CONFIGS)
    for tag, digest in hostile.items():
        assert digest[:19] in rows[tag]
    assert r"  linux/amd64\x1b]0;pwned\x07\r\x1b[2Kteam/fake  1.0  " in rows["evil"]
    assert rows["evil"].endswith(r"  \u202e\x1b[31m2026-01-01 00")
    assert rows["intdate"].split()[-2:] == ["linux/amd64", "-"]
    assert rows["notobject"].split()[-2:] == ["-", "-"]
    skipped = (
        f"[regbox] catalog of {UNTAGGED}: skipped (no tags: the registry answered 404 to tags/list)"
    )
    assert skipped in proc.stderr.splitlines()
    assert not [t for t in listed if t["repository"] == UNTAGGED]
    # The JSON keeps what the registry holds, its control characters escaped by JSON.
    by_tag = {t["tag"]: t for t in listed if t["repository"] == HOSTILE}
    assert by_tag["evil"]["platforms"] == ["linux/amd64\x1b]0;pwned\x07\r\x1b[2Kteam/fake  1.0"]
    assert (by_tag["intdate"]["created"], by_tag["notobject"]["platforms"]) == ("", [])
