"""Every runtime trusts and uses the registry, with clients nobody here wrote.

node1 runs Debian's containerd alone, pod1 Debian's podman, buildah and skopeo, and
oras (the Python SDK) runs here; client1's Docker pushes the image they pull. Each
digest is checked against the one Docker or skopeo reports for the same content.
These hosts start with ``invoke lab.up --all`` (the ``all_hosts`` fixture, whose tests
run after the others: from then on every default trust-ca reaches them).
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import fabric
import oras.client
import pytest
import requests
from playwright.sync_api import Browser

from lab.engine import Engine
from lab.hosts import host_spec
from lab.settings import Settings
from tasks import pki
from tests.lab.conftest import (
    DOMAIN,
    PASSWORD,
    USER,
    Lab,
    Pushed,
    fab,
    lab_ip,
    login,
    must,
    pull_digest,
    push_image,
    run_root,
    sh,
    trust_by_certs_d,
)
from tests.lab.pages import expand, open_page
from tests.lab.test_lab import wait_for_dockerd

HOSTS_DIR = "/etc/containerd/certs.d"
CONFIG = "/etc/containerd/config.toml"
SOCKET = "/run/containerd/containerd.sock"
DOCKER_OPTS = "/etc/default/docker"
# What trust-ca adds to Debian's config.toml (tomlkit keeps the rest as it was).
ADDED = f'\n  [plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "{HOSTS_DIR}"\n'
AUTH_FILE = "/run/containers/0/auth.json"
CERT_ERROR = "x509: certificate signed by unknown authority"
REPO = f"{DOMAIN}/team/runtimes"
ARTIFACT_CONFIG = "application/vnd.regkit.test.config.v1+json"
ARTIFACT_LAYER = "application/vnd.regkit.test.notes.v1+txt"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def debian_config(node: fabric.Connection) -> None:
    """node1's containerd on config.toml as Debian ships it (trust-ca's config_path out)."""
    config = sh(node, f"cat {CONFIG}") + "\n"
    if ADDED in config:
        sh(node, f"cat > {CONFIG} && service containerd restart", config.replace(ADDED, ""))
    assert not sh(node, "dpkg --verify containerd"), "node1's config.toml is not Debian's"


@pytest.fixture(scope="module")
def hosts(registry: Lab, all_hosts: Lab) -> Lab:
    """node1 and pod1 up, trusting nothing of this registry, node1's containerd config as
    Debian ships it and pod1 logged in nowhere (as before an earlier run on a kept lab)."""
    must(fab(registry, "-H", "node1,pod1", "untrust-ca"))
    debian_config(registry.connect("node1"))
    sh(registry.connect("pod1"), f"rm -f {AUTH_FILE}")
    return registry


@pytest.fixture(scope="module")
def docker_image(hosts: Lab) -> Pushed:
    """An image Docker pushed from client1."""
    client = hosts.connect("client1")
    trust_by_certs_d(hosts, client)
    login(client)
    return push_image(client, repo="team/runtimes")


def ctr_pull(ref: str) -> str:
    """ctr pulls with containerd's hosts dir, never --skip-verify. The lab user's password
    is in ctr's argv: ctr reads it from a terminal or from --user only."""
    return f"ctr images pull --hosts-dir {HOSTS_DIR} --user {USER}:{PASSWORD} {ref}"


def ctr_digest(node: object, ref: str) -> str:
    return sh(node, f"ctr images ls | awk '$1 == \"{ref}\" {{print $3}}'")


def ctr_task(node: object) -> str:
    """``keep``'s pid and status, as ``ctr task ls`` shows them."""
    return sh(node, "ctr task ls | awk '$1 == \"keep\" {print $2, $3}'")


@pytest.fixture
def running_task(hosts: Lab) -> Iterator[str]:
    """A container (task ``keep``) running on node1's containerd, from the lab's registry
    image imported with ``ctr images import``; its pid and status."""
    engine = Engine(Settings())
    image = hosts.inventory.registry.images.registry
    node = hosts.connect("node1")
    sh(node, "ctr task kill -s KILL keep; sleep 0.5; ctr task rm keep; ctr c rm keep; true")
    save = subprocess.Popen(engine.cmd("save", image), stdout=subprocess.PIPE)
    imported = subprocess.run(
        engine.cmd("exec", "-i", host_spec("node1").container, "ctr", "images", "import", "-"),
        stdin=save.stdout,
        capture_output=True,
        check=False,
    )
    assert save.wait() == 0 and imported.returncode == 0, imported.stderr
    sh(node, f"ctr run -d docker.io/{image} keep sleep 600")
    yield ctr_task(node)
    sh(node, "ctr task kill -s KILL keep; sleep 0.5; ctr task rm keep; ctr c rm keep; true")


def test_containerd_pulls_after_trust_ca_with_at_most_one_restart(
    hosts: Lab, docker_image: Pushed, running_task: str
) -> None:
    node = hosts.connect("node1")
    status, out, err = run_root(node, ctr_pull(docker_image.ref))
    assert status != 0 and CERT_ERROR in out + err, out + err
    before = sh(node, "pidof containerd")

    first = must(fab(hosts, "-H", "node1", "trust-ca"))
    hosts_toml = f"{HOSTS_DIR}/{DOMAIN}/hosts.toml"
    assert f"[node1] containerd trust: changed (configured: {hosts_toml}, read per pull" in first
    assert f"[node1] file {CONFIG}: changed (replaced)" in first
    assert "[node1] containerd: changed (restarted in" in first
    assert "Docker trust" not in first
    restarted = sh(node, "pidof containerd")
    assert restarted != before
    assert ctr_task(node) == running_task and running_task.endswith(" RUNNING")
    assert f'config_path = "{HOSTS_DIR}"' in sh(node, "containerd config dump")

    sh(node, ctr_pull(docker_image.ref))
    assert ctr_digest(node, docker_image.ref) == docker_image.digest

    again = must(fab(hosts, "-H", "node1", "trust-ca"))
    assert again.strip().endswith(": no changes"), again
    assert "restart" not in again
    assert sh(node, "pidof containerd") == restarted


def test_a_containerd_that_fails_with_the_new_config_gets_the_old_one_back(hosts: Lab) -> None:
    """Its CRI plugin cannot load (its state folder is a file): the restart fails, the
    previous config.toml is put back, and the task says so in one line."""
    node = hosts.connect("node1")
    must(fab(hosts, "-H", "node1", "untrust-ca"))
    debian_config(node)
    state = "/run/containerd/io.containerd.grpc.v1.cri"
    sh(node, f"mv {state} {state}.lab && touch {state}")
    try:
        failed = fab(hosts, "-H", "node1", "trust-ca")
    finally:
        sh(node, f"rm {state} && mv {state}.lab {state} && service containerd restart")
    assert failed.returncode != 0
    assert (
        "containerd did not answer with its CRI plugin loaded within 60 s of a restart with "
        f"the new {CONFIG}; the previous one is back"
    ) in failed.stdout + failed.stderr
    assert "Traceback" not in failed.stderr
    assert not sh(node, "dpkg --verify containerd")
    assert sh(node, f"test -e {CONFIG}.regkit-previous || echo gone") == "gone"


def test_podman_pushes_and_pulls_after_trust_ca_with_no_restart(
    hosts: Lab, docker_image: Pushed
) -> None:
    pod = hosts.connect("pod1")
    status, out, err = run_root(pod, f"podman pull -q {docker_image.ref}")
    assert status != 0 and CERT_ERROR in out + err, out + err

    login_args = ("trust-ca", "--login", USER, "--password-stdin")
    first = must(fab(hosts, "-H", "pod1", *login_args, stdin=PASSWORD + "\n"))
    ca = f"/etc/containers/certs.d/{DOMAIN}/ca.crt"
    assert f"[pod1] podman/buildah/skopeo trust: changed (configured: {ca}, read per call" in first
    auth = AUTH_FILE
    assert f"[pod1] podman login: changed ({USER} at {DOMAIN}, in root's {auth})" in first
    assert "restart" not in first and "Docker trust" not in first

    sh(pod, f"podman rmi -f {docker_image.ref} >/dev/null 2>&1; podman pull -q {docker_image.ref}")
    digest = sh(pod, f"podman image inspect --format '{{{{.Digest}}}}' {docker_image.ref}")
    assert digest == docker_image.digest

    pushed = sh(
        pod,
        "c=$(buildah from scratch) && echo podman > /tmp/podman.txt && "
        "buildah copy -q $c /tmp/podman.txt /podman.txt >/dev/null && "
        "buildah commit -q $c localhost/podman-made >/dev/null && buildah rm $c >/dev/null && "
        f"podman push -q --digestfile /tmp/pd localhost/podman-made {REPO}:podman && cat /tmp/pd",
    )
    assert pushed == skopeo_digest(pod, f"{REPO}:podman")

    again = must(fab(hosts, "-H", "pod1", *login_args, stdin=PASSWORD + "\n"))
    assert f"[pod1] podman login: unchanged ({USER} at {DOMAIN}, in root's {auth})" in again
    assert again.strip().endswith(": no changes"), again


@contextmanager
def docker_on_its_own_containerd(conn: object) -> Iterator[None]:
    """dockerd on a containerd of its own, as Debian's systemd hosts run it (``dockerd
    --containerd=/run/containerd/containerd.sock``); the host is put back after."""
    sh(
        conn,
        f"for f in {DOCKER_OPTS} {CONFIG}; do cp -p $f $f.lab; done && "
        "service containerd start >/dev/null && "
        f"sed -i 's|^DOCKER_OPTS=\"|DOCKER_OPTS=\"--containerd={SOCKET} |' {DOCKER_OPTS} && "
        "service docker restart >/dev/null",
    )
    wait_for_dockerd(conn, sudo=True)
    try:
        yield
    finally:
        sh(
            conn,
            f"for f in {DOCKER_OPTS} {CONFIG}; do mv $f.lab $f; done && "
            f"rm -rf {HOSTS_DIR} && service docker restart >/dev/null && "
            "service containerd stop >/dev/null",
        )
        wait_for_dockerd(conn, sudo=True)


def test_docker_on_the_same_containerd_is_told_what_restarts(
    hosts: Lab, docker_image: Pushed
) -> None:
    client = hosts.connect("client2")
    must(fab(hosts, "-H", "client2", "untrust-ca"))
    with docker_on_its_own_containerd(client):
        assert SOCKET in sh(client, "ps -o args= -C dockerd")
        out = must(fab(hosts, "-H", "client2", "trust-ca"))
        assert (
            "[client2] restarting containerd: CRI config_path set to /etc/containerd/certs.d; "
            "running containers keep running (their shims outlive it); "
            "Docker runs on it and reconnects"
        ) in out
        assert "[client2] containerd: changed (restarted in" in out
        assert "[client2] docker daemon: changed (restarted in" in out
        assert "[client2] Docker trust: changed" in out
        assert "[client2] containerd trust: changed" in out
        login(client)
        assert pull_digest(client, docker_image) == docker_image.digest
    must(fab(hosts, "-H", "client2", "trust-ca"))


def skopeo_digest(pod: object, ref: str) -> str:
    """The digest of the manifest the registry serves for ``ref``, by skopeo."""
    return sh(pod, f"skopeo inspect --raw docker://{ref} > /tmp/m && skopeo manifest-digest /tmp/m")


def test_skopeo_copies_in_and_out_inspects_and_lists(hosts: Lab, docker_image: Pushed) -> None:
    pod = hosts.connect("pod1")
    inspected = json.loads(sh(pod, f"skopeo inspect docker://{docker_image.ref}"))
    assert inspected["Digest"] == docker_image.digest
    tag = docker_image.ref.rsplit(":", 1)[1]
    assert tag in json.loads(sh(pod, f"skopeo list-tags docker://{REPO}"))["Tags"]

    sh(pod, f"rm -rf /tmp/layout && skopeo copy -q docker://{docker_image.ref} oci:/tmp/layout:v1")
    layout = sh(
        pod, "skopeo inspect --raw oci:/tmp/layout:v1 > /tmp/l && skopeo manifest-digest /tmp/l"
    )
    sh(pod, f"skopeo copy -q oci:/tmp/layout:v1 docker://{REPO}:skopeo")
    assert skopeo_digest(pod, f"{REPO}:skopeo") == layout


@pytest.fixture(scope="module")
def index(hosts: Lab) -> str:
    """A two-platform index podman pushed (images buildah made); its digest."""
    pod = hosts.connect("pod1")
    build = " && ".join(
        f"c=$(buildah from scratch) && echo {arch} > /tmp/{arch}.txt && "
        f"buildah copy -q $c /tmp/{arch}.txt /arch.txt >/dev/null && "
        f"buildah config --os linux --arch {arch} $c && "
        f"buildah commit -q $c localhost/multi-{arch} >/dev/null && buildah rm $c >/dev/null"
        for arch in ("amd64", "arm64")
    )
    sh(
        pod,
        f"{build} && (podman manifest rm localhost/multi >/dev/null 2>&1; true) && "
        "podman manifest create localhost/multi >/dev/null && "
        + "".join(
            f"podman manifest add localhost/multi containers-storage:localhost/multi-{arch} "
            ">/dev/null && "
            for arch in ("amd64", "arm64")
        )
        + f"podman manifest push -q --all --digestfile /tmp/md localhost/multi docker://{REPO}:multi",
    )
    return sh(pod, "cat /tmp/md")


def test_a_two_platform_index_through_podman_and_skopeo(hosts: Lab, index: str) -> None:
    pod = hosts.connect("pod1")
    assert skopeo_digest(pod, f"{REPO}:multi") == index
    served = json.loads(sh(pod, f"skopeo inspect --raw docker://{REPO}:multi"))
    platforms = {m["platform"]["architecture"] for m in served["manifests"]}
    assert platforms == {"amd64", "arm64"}

    sh(pod, f"skopeo copy -q --all docker://{REPO}:multi docker://{REPO}:multi-copy")
    assert skopeo_digest(pod, f"{REPO}:multi-copy") == index


def test_buildah_builds_from_scratch_and_pushes(hosts: Lab) -> None:
    pod = hosts.connect("pod1")
    pushed = sh(
        pod,
        "c=$(buildah from scratch) && echo buildah > /tmp/b.txt && "
        "buildah copy -q $c /tmp/b.txt /b.txt >/dev/null && "
        "buildah config --entrypoint '[\"/b\"]' $c && "
        "buildah commit -q $c localhost/buildah-made >/dev/null && buildah rm $c >/dev/null && "
        f"buildah push -q --digestfile /tmp/bd localhost/buildah-made docker://{REPO}:buildah && "
        "cat /tmp/bd",
    )
    assert pushed == skopeo_digest(pod, f"{REPO}:buildah")


@contextmanager
def resolving(name: str, address: str) -> Iterator[None]:
    """``name`` resolves to ``address`` in this process only (as curl --resolve would)."""
    real = socket.getaddrinfo

    def lookup(host: str, *args: object, **kwargs: object) -> list:
        return real(address if host == name else host, *args, **kwargs)

    socket.getaddrinfo = lookup
    try:
        yield
    finally:
        socket.getaddrinfo = real


@dataclass
class Artifact:
    target: str
    sent: bytes
    served: requests.Response
    pulled: list[str]

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.sent).hexdigest()


@pytest.fixture(scope="module")
def artifact(hosts: Lab, tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """oras (Python SDK) pushes an artifact of our own media types from here, and pulls it."""
    work = tmp_path_factory.mktemp("oras")
    (work / "notes.txt").write_text("release notes\n")
    (work / "config.json").write_text('{"kind": "notes"}')
    ca = str(pki.paths(hosts.inventory).ca_cert)
    client = oras.client.OrasClient(hostname=DOMAIN, tls_verify=ca)
    target = f"{DOMAIN}/team/notes:v1"
    with resolving(DOMAIN, lab_ip()):
        # oras-py keeps one token per client and asks for a new one only after a 403,
        # while distribution answers a token of too small a scope with 401 (as the
        # token spec says): so, as a CI job would, it holds a pull,push token up front.
        granted = requests.get(
            f"https://{DOMAIN}/auth/token",
            params={"service": DOMAIN, "scope": "repository:team/notes:pull,push"},
            auth=(USER, PASSWORD),
            verify=ca,
            timeout=30,
        )
        client.auth.set_token_auth(granted.json()["token"])
        pushed = client.push(
            files=[f"{work}/notes.txt:{ARTIFACT_LAYER}"],
            target=target,
            manifest_config=f"{work}/config.json:{ARTIFACT_CONFIG}",
            disable_path_validation=True,
        )
        manifest_url = f"https://{client.get_container(target).manifest_url()}"
        served = client.do_request(manifest_url, "GET", headers={"Accept": OCI_MANIFEST})
        pulled = client.pull(target=target, outdir=str(work / "out"))
    return Artifact(target, pushed.request.body, served, pulled)


def test_oras_pushes_and_pulls_an_artifact_served_back_byte_identical(
    hosts: Lab, artifact: Artifact
) -> None:
    assert artifact.served.content == artifact.sent
    assert artifact.served.headers["Docker-Content-Digest"] == artifact.digest
    assert json.loads(artifact.sent)["config"]["mediaType"] == ARTIFACT_CONFIG
    assert [Path(p).read_text() for p in artifact.pulled] == ["release notes\n"]
    assert skopeo_digest(hosts.connect("pod1"), artifact.target) == artifact.digest


def test_the_catalog_shows_the_index_and_the_artifact(
    hosts: Lab, index: str, artifact: Artifact
) -> None:
    out = must(fab(hosts, "-H", "regbox", "catalog"))
    multi = next(line for line in out.splitlines() if " multi " in line)
    assert "index: linux/amd64, linux/arm64" in multi
    notes = next(line for line in out.splitlines() if line.startswith("team/notes"))
    assert f"artifact: {ARTIFACT_CONFIG}" in notes


def test_the_catalog_page_shows_the_index_and_the_artifact(
    browser: Browser, index: str, artifact: Artifact
) -> None:
    page = open_page(browser)
    page.goto(f"https://{DOMAIN}/")
    for repository, tag, digest, platform in (
        ("team/runtimes", "multi", index, "multi-arch index: linux/amd64, linux/arm64"),
        ("team/notes", "v1", artifact.digest, f"artifact: {ARTIFACT_CONFIG}"),
    ):
        row = expand(page, repository).locator(f'tr[data-tag="{tag}"]')
        row.locator("td.digest:not(.muted)").wait_for(timeout=20000)
        assert row.locator("td.digest").inner_text() == digest
        assert row.locator("td.platform").inner_text() == platform
    assert page.locator("#error").is_hidden()


def test_untrust_ca_makes_ctr_and_podman_fail_again(hosts: Lab, docker_image: Pushed) -> None:
    must(fab(hosts, "-H", "node1,pod1", "trust-ca"))
    out = must(fab(hosts, "-H", "node1,pod1", "untrust-ca"))
    assert f"[node1] file {HOSTS_DIR}/{DOMAIN}/hosts.toml: changed (removed)" in out
    assert f"[pod1] file /etc/containers/certs.d/{DOMAIN}/ca.crt: changed (removed)" in out
    node, pod = hosts.connect("node1"), hosts.connect("pod1")
    assert sh(node, f"test -e {HOSTS_DIR}/{DOMAIN} || echo gone") == "gone"
    assert sh(pod, f"test -e /etc/containers/certs.d/{DOMAIN} || echo gone") == "gone"
    sh(node, f"ctr images rm {docker_image.ref} >/dev/null 2>&1; true")
    status, out, err = run_root(node, ctr_pull(docker_image.ref))
    assert status != 0 and CERT_ERROR in out + err, out + err
    sh(pod, f"podman rmi -f {docker_image.ref} >/dev/null 2>&1; true")
    status, out, err = run_root(pod, f"podman pull -q {docker_image.ref}")
    assert status != 0 and CERT_ERROR in out + err, out + err
