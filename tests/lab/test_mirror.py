"""The mirror: Docker Hub's images through a pull-through cache on the registry host.

The lab's hub (``lab.up --all``) plays Docker Hub: ``library/alpine:lab`` exists only
there. The lab inventory that ``--all`` writes names hub as ``registry.mirror``'s
upstream, so a deploy runs the mirror. Clients are pinned to regbox (regbox2, when it
runs, keeps a cache of its own).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import fabric
import pytest

from lab import hub
from lab.engine import Engine
from lab.settings import Settings
from tests.lab.conftest import DOMAIN, Lab, fab, must, pinned, run_root, sh

MIRROR = f"{DOMAIN}:5443"
ALPINE = hub.digest(hub.lab_image("alpine").manifest)
CERTS = f"/etc/docker/certs.d/{MIRROR}"
DAEMON_JSON = {"log-level": "info", "registry-mirrors": ["https://mirror.example.invalid"]}


@pytest.fixture(scope="module")
def mirrored(registry: Lab, all_hosts: Lab) -> Lab:
    """regbox deployed with the mirror of hub."""
    assert all_hosts.inventory.registry.mirror is not None
    out = must(fab(all_hosts, "-H", "regbox", "deploy"))
    assert "[regbox] verify mirror: ok" in out
    return all_hosts


@contextmanager
def hub_down(lab: Lab) -> Iterator[None]:
    """hub stopped while the block runs; then started again as lab.up starts it (its
    address may change: the inventory and regbox's mirror follow)."""
    Engine(Settings()).run("stop", hub.CONTAINER)
    try:
        yield
    finally:
        must(lab.invoke("lab.up", "--all"))
        lab.reload()
        must(fab(lab, "-H", "regbox", "deploy"))


def docker_pull(conn: fabric.Connection, ref: str) -> tuple[int, str]:
    status, out, err = run_root(conn, f"docker pull {ref} 2>&1")
    return status, out + err


def test_hub_images_come_through_the_mirror_and_from_its_cache_when_hub_is_down(
    mirrored: Lab,
) -> None:
    lab = mirrored
    names = ("client1", "client2", "node1", "pod1")
    out = must(fab(lab, "-H", ",".join(names), "trust-ca", "--mirror"))
    for alias in ("client1", "client2"):
        assert f"[{alias}] Docker mirror: changed (configured, new client certificate:" in out
    assert "[node1] containerd mirror: changed" in out
    assert "[pod1] podman/buildah/skopeo mirror: changed" in out
    assert out.count("answers this host's client certificate (200)") == 4
    conns = {alias: lab.connect(alias) for alias in names}
    with ExitStack() as stack:
        for conn in conns.values():
            stack.enter_context(pinned(conn, "regbox"))
        for conn in conns.values():
            run_root(conn, "docker rmi alpine:lab; ctr images rm docker.io/library/alpine:lab; "
                     "podman rmi docker.io/library/alpine:lab")  # fmt: skip
        status, pulled = docker_pull(conns["client1"], "alpine:lab")
        assert status == 0 and f"Digest: {ALPINE}" in pulled, pulled

        with hub_down(lab):
            assert not hub.running(Engine(Settings()))
            status, pulled = docker_pull(conns["client2"], "alpine:lab")
            assert status == 0 and f"Digest: {ALPINE}" in pulled, pulled
            sh(conns["node1"], "ctr images pull --hosts-dir /etc/containerd/certs.d "
               "docker.io/library/alpine:lab >/dev/null")  # fmt: skip
            listed = sh(conns["node1"], "ctr images ls name==docker.io/library/alpine:lab")
            assert ALPINE in listed
            sh(conns["pod1"], "podman pull -q docker.io/library/alpine:lab >/dev/null")
            digest = sh(conns["pod1"], "podman image inspect --format '{{.Digest}}' alpine:lab")
            assert digest == ALPINE

    again = must(fab(lab, "-H", ",".join(names), "trust-ca", "--mirror"))
    assert ": changed" not in again and ": no changes" in again, again


def test_daemon_json_keys_survive_trust_ca_mirror_and_untrust_ca(mirrored: Lab) -> None:
    lab = mirrored
    client1 = lab.connect("client1")
    sh(client1, "cat > /etc/docker/daemon.json && kill -HUP $(pidof dockerd)",
       json.dumps(DAEMON_JSON))  # fmt: skip
    try:
        must(fab(lab, "-H", "client1", "trust-ca", "--mirror"))
        merged = json.loads(sh(client1, "cat /etc/docker/daemon.json"))
        assert merged == {
            **DAEMON_JSON,
            "registry-mirrors": [f"https://{MIRROR}", *DAEMON_JSON["registry-mirrors"]],
        }
        running = sh(client1, "docker info --format '{{json .RegistryConfig.Mirrors}}'")
        assert json.loads(running)[0] == f"https://{MIRROR}/"

        out = must(fab(lab, "-H", "client1", "untrust-ca"))
        assert "[client1] docker daemon: changed (reloaded: registry-mirrors" in out
        assert json.loads(sh(client1, "cat /etc/docker/daemon.json")) == DAEMON_JSON
        assert sh(client1, f"[ -e {CERTS} ] && echo left || echo gone") == "gone"
        running = sh(client1, "docker info --format '{{json .RegistryConfig.Mirrors}}'")
        assert json.loads(running) == ["https://mirror.example.invalid/"]
    finally:
        # dockerd keeps its mirrors when daemon.json is gone: clear them first.
        sh(client1, "echo '{\"registry-mirrors\": []}' > /etc/docker/daemon.json && "
           "kill -HUP $(pidof dockerd) && sleep 1 && rm /etc/docker/daemon.json")  # fmt: skip
        must(fab(lab, "-H", "client1", "trust-ca"))


def test_a_push_to_the_mirror_is_refused_with_a_clear_error(mirrored: Lab) -> None:
    lab = mirrored
    client1 = lab.connect("client1")
    must(fab(lab, "-H", "client1", "trust-ca", "--mirror"))
    with pinned(client1, "regbox"):
        status, pulled = docker_pull(client1, "alpine:lab")
        assert status == 0, pulled
        sh(client1, f"docker tag alpine:lab {MIRROR}/library/alpine:mine")
        status, out, err = run_root(client1, f"docker push {MIRROR}/library/alpine:mine 2>&1")
    assert status != 0
    assert f"{MIRROR} is a read-only mirror of {lab.inventory.registry.mirror.upstream}; " \
        f"push to {DOMAIN}" in out + err, out + err  # fmt: skip

    # Back to pulling from Docker Hub, the registry's CA still trusted.
    out = must(fab(lab, "-H", "client1", "untrust-ca", "--mirror"))
    assert "[client1] docker daemon: changed (reloaded: registry-mirrors" in out
    assert sh(client1, f"[ -e {CERTS} ] && echo left || echo gone") == "gone"
    assert sh(client1, "[ -e /etc/docker/daemon.json ] && echo left || echo gone") == "gone"
    assert sh(client1, f"cat /etc/docker/certs.d/{DOMAIN}/ca.crt").startswith("-----BEGIN")


def test_status_shows_the_cache_and_gc_collects_it(mirrored: Lab) -> None:
    lab = mirrored
    regbox, client1 = lab.connect("regbox"), lab.connect("client1")
    must(fab(lab, "-H", "client1", "trust-ca", "--mirror"))
    with pinned(client1, "regbox"):
        status, pulled = docker_pull(client1, "alpine:lab")
    assert status == 0, pulled
    shown = must(fab(lab, "-H", "regbox", "status"))
    line = next(x for x in shown.splitlines() if x.startswith("[regbox] mirror: cache "))
    served = int(line.split("manifests: ")[1].split(" served")[0])
    assert served >= 1, line
    assert "[regbox] regkit-mirror: running" in shown

    # A blob no cached manifest names, as a pull cut off halfway leaves one.
    stray = "0" * 63 + "1"
    blob = f"/var/lib/regkit/mirror/docker/registry/v2/blobs/sha256/00/{stray}"
    sh(regbox, f"mkdir -p {blob} && head -c 4096 /dev/urandom > {blob}/data")
    out = must(fab(lab, "-H", "regbox", "gc"))
    assert "[regbox] mirror gc dry run: ok (1 blobs eligible for deletion" in out
    assert "[regbox] mirror gc: changed (1 blobs deleted from /var/lib/regkit/mirror" in out
    assert sh(regbox, f"[ -e {blob}/data ] && echo kept || echo gone") == "gone"
    assert sh(regbox, "docker inspect --format '{{.State.Running}}' regkit-mirror") == "true"
    with pinned(client1, "regbox"):
        run_root(client1, "docker rmi alpine:lab")
        status, pulled = docker_pull(client1, "alpine:lab")
    assert status == 0 and f"Digest: {ALPINE}" in pulled, pulled
