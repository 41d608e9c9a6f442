"""`fab trust-ca` against the lab: Debian hosts and boot2docker trust the registry's CA."""

from __future__ import annotations

import pytest

from lab.engine import Engine
from lab.hosts import host_spec
from lab.settings import Settings
from tasks import pki
from tests.lab.conftest import (
    DOMAIN,
    Lab,
    Pushed,
    fab,
    login,
    must,
    pull_digest,
    push_image,
    sh,
)

CLIENTS = ("client1", "client2", "b2d")
BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def dockerd_pid(lab: Lab, alias: str) -> str:
    return sh(lab.connect(alias), "pidof dockerd")


def ca_copies(lab: Lab, alias: str) -> int:
    line = pki.paths(lab.inventory).ca_cert.read_text().splitlines()[1]
    return int(sh(lab.connect(alias), f"grep -c -F -e '{line}' {BUNDLE} || true"))


@pytest.fixture(scope="module")
def trusted(registry: Lab) -> str:
    """trust-ca on every client, from untrusted (so the first run really installs)."""
    must(fab(registry, "-H", ",".join(CLIENTS), "untrust-ca"))
    return must(fab(registry, "-H", ",".join(CLIENTS), "trust-ca"))


@pytest.fixture(scope="module")
def pushed(registry: Lab, trusted: str) -> Pushed:
    c1 = registry.connect("client1")
    login(c1)
    return push_image(c1)


def test_first_run_installs_and_restarts_where_needed(trusted: str) -> None:
    for alias, store in [("client1", "debian"), ("client2", "debian"), ("b2d", "boot2docker")]:
        assert f"[{alias}] file /etc/docker/certs.d/{DOMAIN}/ca.crt: changed (new)" in trusted
        assert f"[{alias}] system CA store ({store}): changed (CA trusted)" in trusted
        assert f"[{alias}] docker daemon: changed (restarted in" in trusted
        assert (
            f"[{alias}] verify: ok (https://{DOMAIN}/_ping verifies with the system store"
            in trusted
        )
    assert f"[b2d] file /var/lib/boot2docker/certs/regkit-{DOMAIN}.pem: changed (new)" in trusted


def test_push_on_client1_pull_on_client2_and_b2d(registry: Lab, pushed: Pushed) -> None:
    for alias in ("client2", "b2d"):
        conn = registry.connect(alias)
        login(conn)
        assert pull_digest(conn, pushed) == pushed.digest
    for alias in CLIENTS:
        flags = sh(
            registry.connect(alias),
            "ps -o args= -C dockerd; cat /etc/docker/daemon.json 2>/dev/null || true",
        )
        assert "insecure-registr" not in flags


def test_second_run_changes_nothing_and_restarts_nothing(registry: Lab, trusted: str) -> None:
    pids = {alias: dockerd_pid(registry, alias) for alias in CLIENTS}
    out = must(fab(registry, "-H", ",".join(CLIENTS), "trust-ca"))
    assert ": changed" not in out
    assert out.strip().endswith("0 changed, 6 unchanged, 3 ok: no changes")
    assert {alias: dockerd_pid(registry, alias) for alias in CLIENTS} == pids
    for alias in CLIENTS:
        assert ca_copies(registry, alias) == 1


def test_without_hosts_it_takes_every_client(registry: Lab, trusted: str) -> None:
    out = must(fab(registry, "trust-ca"))
    for alias in CLIENTS:
        assert f"[{alias}] verify: ok" in out
    assert "[regbox]" not in out


def test_b2d_keeps_trust_across_a_reboot(registry: Lab, pushed: Pushed) -> None:
    must(registry.invoke("lab.reboot", "b2d"))
    registry.reload()
    b2d = registry.connect("b2d")
    assert sh(b2d, f"ls /etc/docker/certs.d/{DOMAIN} 2>/dev/null || echo gone") == "gone"
    assert ca_copies(registry, "b2d") == 1
    login(b2d)
    assert pull_digest(b2d, pushed) == pushed.digest


def test_one_unreachable_host_does_not_stop_the_others(registry: Lab, trusted: str) -> None:
    engine = Engine(Settings())
    container = host_spec("client2").container
    engine.exec(container, "pkill -x sshd")
    try:
        out = fab(registry, "-H", "client1,client2", "trust-ca")
    finally:
        engine.exec(container, "/usr/sbin/sshd")
    assert out.returncode != 0
    assert "[client1] verify: ok" in out.stdout
    assert "[client2] trust: failed (client2 (admin@127.0.0.1:" in out.stdout
    assert "is sshd running?" in out.stdout
    assert "error: trust-ca failed on client2" in out.stderr
    assert "Traceback" not in out.stderr


def test_untrust_brings_the_x509_error_back(registry: Lab, pushed: Pushed) -> None:
    out = must(fab(registry, "-H", "client1", "untrust-ca"))
    assert "[client1] system CA store (debian): changed (CA removed)" in out
    c1 = registry.connect("client1")
    assert ca_copies(registry, "client1") == 0
    result = c1.run(f"sudo -n docker pull {pushed.ref}", hide=True, warn=True, in_stream=False)
    assert result.failed
    assert "x509: certificate signed by unknown authority" in result.stderr
    again = must(fab(registry, "-H", "client1", "trust-ca"))
    assert "[client1] verify: ok" in again
    # untrust-ca took root's login away too (#21): log in again.
    login(c1)
    assert pull_digest(c1, pushed) == pushed.digest
