"""trust-ca's planning: flavor detection, restart commands, the generic bundle block."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tasks import certificates, pki
from tasks.inventory import Inventory
from tasks.plans import trust
from tasks.plans.trust import TrustFacts


@pytest.mark.parametrize(
    ("declared", "facts", "flavor"),
    [
        (None, TrustFacts(os="debian", update_ca_certificates=True), "debian"),
        (None, TrustFacts(os="ubuntu", id_like="debian", update_ca_certificates=True), "debian"),
        (None, TrustFacts(os="alpine", update_ca_certificates=True), "alpine"),
        (None, TrustFacts(os="rocky", id_like="rhel centos fedora", update_ca_trust=True), "rhel"),
        (None, TrustFacts(os="fedora", update_ca_trust=True), "rhel"),
        (None, TrustFacts(os="boot2docker", update_ca_certificates=True), "boot2docker"),
        (None, TrustFacts(os="arch"), "generic"),
        ("rhel", TrustFacts(os="debian", update_ca_certificates=True), "rhel"),
    ],
)
def test_detect_flavor(declared: str | None, facts: TrustFacts, flavor: str) -> None:
    assert trust.detect_flavor(declared, facts) == flavor


@pytest.mark.parametrize(
    ("flavor", "facts", "command"),
    [
        ("boot2docker", TrustFacts(systemd=True), "/etc/init.d/docker restart"),
        ("debian", TrustFacts(systemd=True, service=True), "systemctl restart docker"),
        ("debian", TrustFacts(service=True), "service docker restart"),
        ("alpine", TrustFacts(), "/etc/init.d/docker restart"),
    ],
)
def test_restart_uses_the_hosts_own_way(flavor: str, facts: TrustFacts, command: str) -> None:
    script = trust.restart_script(flavor, facts)
    first = next(line for line in script.splitlines() if not line.startswith("#"))
    assert first.startswith(command)
    assert "docker info" in script


def test_parse_facts() -> None:
    out = "os\tdebian\nuca\tyes\nsystemd\tyes\nlive_restore\tfalse\nin_bundle:0\t1\n"
    out += "in_bundle:1\t0\nblock\tfeed\nbundle\t/etc/ssl/certs/ca-certificates.crt\n"
    out += "file:/x.crt\tabc 644 0 0\n"
    f = trust.parse_facts(out)
    assert (f.os, f.update_ca_certificates, f.systemd, f.live_restore) == (
        "debian",
        True,
        True,
        False,
    )
    assert (f.in_bundle, f.block) == ({0: 1, 1: 0}, "feed")
    assert f.bundle == "/etc/ssl/certs/ca-certificates.crt"
    assert f.files == {"/x.crt": "abc 644 0 0"}


@pytest.mark.parametrize("flavor", ["debian", "rhel", "boot2docker"])
def test_store_paths_are_where_each_flavor_reads(pki_inv: Inventory, flavor: str) -> None:
    path = trust.store_path(pki_inv, flavor)
    assert path.endswith(".crt" if flavor != "boot2docker" else ".pem")
    assert "regkit-registry.unit.test" in path


def run_generic(inv: Inventory, bundle: Path, ca_pem: bytes) -> None:
    facts = TrustFacts(bundle=str(bundle))
    script = trust.store_script(inv, "generic", facts, ca_pem)
    subprocess.run(["sh", "-c", script], check=True, timeout=30)


def test_generic_bundle_holds_the_ca_once_however_often_it_runs(
    pki_inv: Inventory, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca-certificates.crt"
    other = "-----BEGIN CERTIFICATE-----\nOTHER\n-----END CERTIFICATE-----\n"
    bundle.write_text(other)
    bundle.chmod(0o644)
    ca_pem = pki.paths(pki_inv).ca_cert.read_bytes()
    line = trust.pem_marker_line(ca_pem)
    for _ in range(3):
        run_generic(pki_inv, bundle, ca_pem)
        assert bundle.read_text().count(line) == 1
    assert bundle.read_text().startswith(other)
    assert bundle.stat().st_mode & 0o777 == 0o644
    run_generic(pki_inv, bundle, b"")
    assert bundle.read_text() == other


def test_plan_carries_both_cas_during_a_rotation_then_drops_the_old(pki_inv: Inventory) -> None:
    current = certificates.cert_pem(pki.read_cert(pki.paths(pki_inv).ca_cert))
    following = certificates.cert_pem(
        certificates.build_ca(certificates.new_key("ec-p256"), "org", "a.example", 3650)
    )
    store, store_next = (trust.store_path(pki_inv, "debian", x) for x in trust.SUFFIXES)
    rotating = trust.plan(pki_inv, "debian", TrustFacts(), [current, following])
    assert {u.path: u.content for u in rotating.uploads} == {
        pki_inv.registry.certs_d: current + following,
        store: current,
        store_next: following,
    }
    assert rotating.system_changed and not rotating.remove

    installed = {u.path: u.fact for u in rotating.uploads}
    settled = TrustFacts(files=installed, in_bundle={0: 1, 1: 1})
    assert not trust.plan(pki_inv, "debian", settled, [current, following]).system_changed

    retired = trust.plan(pki_inv, "debian", settled, [following])
    assert retired.remove == (store_next,)
    assert retired.system_changed
    assert {u.path for u in retired.uploads} == {pki_inv.registry.certs_d, store}


def test_docker_restarts_only_when_the_system_store_changes(pki_inv: Inventory) -> None:
    current = certificates.cert_pem(pki.read_cert(pki.paths(pki_inv).ca_cert))
    fresh = trust.plan(pki_inv, "debian", TrustFacts(docker=True), [current])
    assert fresh.system_changed and fresh.restart_docker
    installed = {u.path: u.fact for u in fresh.uploads}
    settled = TrustFacts(docker=True, files=installed, in_bundle={0: 1})
    again = trust.plan(pki_inv, "debian", settled, [current])
    assert not again.changes and not again.restart_docker
    no_docker = trust.plan(pki_inv, "debian", TrustFacts(), [current])
    assert no_docker.system_changed and not no_docker.restart_docker


def test_untrust_removes_what_trust_placed_and_restarts_docker(pki_inv: Inventory) -> None:
    current = certificates.cert_pem(pki.read_cert(pki.paths(pki_inv).ca_cert))
    installed = {
        u.path: u.fact for u in trust.plan(pki_inv, "debian", TrustFacts(), [current]).uploads
    }
    gone = trust.untrust_plan(pki_inv, "debian", TrustFacts(docker=True, files=installed))
    assert set(gone.remove) == set(installed) and gone.system_changed and gone.restart_docker
    nothing = trust.untrust_plan(pki_inv, "debian", TrustFacts(docker=True))
    assert not nothing.changes and not nothing.restart_docker
