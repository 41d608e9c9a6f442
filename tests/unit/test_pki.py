"""The PKI: what openssl and cryptography's verifier think of the certificates."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.verification import (
    PolicyBuilder,
    ServerVerifier,
    Store,
    VerificationError,
)

from tasks import certificates, pki
from tasks.errors import PkiError
from tasks.inventory import Inventory
from tests.unit.conftest import PASSPHRASE


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)


def verifier_for(p: pki.Paths, name: x509.GeneralName) -> ServerVerifier:
    store = Store([pki.read_cert(p.ca_cert)])
    return PolicyBuilder().store(store).build_server_verifier(name)


def test_openssl_verifies_server_cert_for_tls_server_use(pki_inv: Inventory) -> None:
    p = pki.paths(pki_inv)
    result = openssl(
        "verify", "-purpose", "sslserver", "-CAfile", str(p.ca_cert), str(p.server_cert)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK")


def test_openssl_shows_sans_and_server_auth(pki_inv: Inventory) -> None:
    text = openssl("x509", "-noout", "-text", "-in", str(pki.paths(pki_inv).server_cert)).stdout
    assert "DNS:registry.unit.test, DNS:registry, DNS:alt.unit.test" in text
    assert "IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1" in text
    assert "TLS Web Server Authentication" in text
    assert "CA:FALSE" in text


@pytest.mark.parametrize(
    "name",
    [
        x509.DNSName("registry.unit.test"),
        x509.DNSName("alt.unit.test"),
        x509.DNSName("registry"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ],
)
def test_cryptography_verifier_accepts_every_name(
    pki_inv: Inventory, name: x509.GeneralName
) -> None:
    p = pki.paths(pki_inv)
    chain = verifier_for(p, name).verify(pki.read_cert(p.server_cert), [])
    assert chain[-1] == pki.read_cert(p.ca_cert)


def test_cryptography_verifier_refuses_other_names(pki_inv: Inventory) -> None:
    p = pki.paths(pki_inv)
    with pytest.raises(VerificationError):
        verifier_for(p, x509.DNSName("evil.unit.test")).verify(pki.read_cert(p.server_cert), [])


def test_ca_extensions(pki_inv: Inventory) -> None:
    ca = pki.read_cert(pki.paths(pki_inv).ca_cert)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    leaf = pki.read_cert(pki.paths(pki_inv).server_cert)
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)


def test_keys_are_private_and_ca_key_encrypted(pki_inv: Inventory) -> None:
    p = pki.paths(pki_inv)
    for key in (p.ca_key, p.server_key):
        assert key.stat().st_mode & 0o777 == 0o600
    assert p.root.stat().st_mode & 0o777 == 0o700
    assert b"ENCRYPTED PRIVATE KEY" in p.ca_key.read_bytes()
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(p.ca_key.read_bytes(), password=None)


def test_wrong_passphrase_is_a_clear_error(pki_inv: Inventory) -> None:
    with pytest.raises(PkiError, match=r"ca\.key: wrong CA passphrase$"):
        pki.issue_server(pki_inv, "not-the-passphrase")


def test_every_wrong_passphrase_is_called_wrong(pki_inv: Inventory) -> None:
    """About one wrong passphrase in 256 decrypts the key to garbage with valid padding
    (it then fails to parse): it must still read as a wrong passphrase, not damage."""
    p = pki.paths(pki_inv)
    for attempt in range(2000):
        with pytest.raises(PkiError, match=r"ca\.key: wrong CA passphrase$"):
            pki.read_key(p.ca_key, f"not-the-passphrase-{attempt}")


def test_truncated_ca_key_is_a_clear_error(pki_inv: Inventory) -> None:
    p = pki.paths(pki_inv)
    p.ca_key.write_bytes(p.ca_key.read_bytes()[:100])
    with pytest.raises(PkiError, match="truncated or damaged"):
        pki.issue_server(pki_inv, PASSPHRASE)


def test_init_never_overwrites_a_ca(pki_inv: Inventory) -> None:
    p = pki.paths(pki_inv)
    before = p.ca_cert.read_bytes()
    with pytest.raises(PkiError, match="a CA already exists and is kept"):
        pki.init_pki(pki_inv, PASSPHRASE)
    assert p.ca_cert.read_bytes() == before


def test_init_force_keeps_a_backup(pki_inv: Inventory) -> None:
    p = pki.paths(pki_inv)
    before = p.ca_cert.read_bytes()
    backup = pki.init_pki(pki_inv, PASSPHRASE, force=True)
    assert backup is not None
    assert (backup / "ca.crt").read_bytes() == before
    assert p.ca_cert.read_bytes() != before


def test_renew_issues_a_new_certificate_from_the_same_ca(pki_inv: Inventory) -> None:
    p = pki.paths(pki_inv)
    old = pki.read_cert(p.server_cert)
    new = pki.issue_server(pki_inv, PASSPHRASE)
    assert new.serial_number != old.serial_number
    assert new.issuer == old.issuer
    result = openssl(
        "verify", "-purpose", "sslserver", "-CAfile", str(p.ca_cert), str(p.server_cert)
    )
    assert result.returncode == 0


@pytest.mark.parametrize("key_type", ["rsa-2048"])
def test_rsa_keys_on_request(inv: Inventory, key_type: str) -> None:
    rsa_inv = inv.model_copy(update={"pki": inv.pki.model_copy(update={"key_type": key_type})})
    pki.init_pki(rsa_inv, PASSPHRASE)
    cert = pki.read_cert(pki.paths(rsa_inv).server_cert)
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    assert cert.public_key().key_size == 2048
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment


def test_show_warns_near_expiry(pki_inv: Inventory) -> None:
    cert = pki.read_cert(pki.paths(pki_inv).server_cert)
    assert not any("WARNING" in line for line in certificates.describe("server", cert, 30))
    assert "WARNING: server expires in" in certificates.describe("server", cert, 400)[-1]


def test_missing_ca_says_to_run_init(inv: Inventory) -> None:
    with pytest.raises(PkiError, match=r"missing; run 'invoke pki.init' first"):
        pki.issue_server(inv, PASSPHRASE)


def test_server_cert_never_outlives_the_ca() -> None:
    key = certificates.new_key("ec-p256")
    ca = certificates.build_ca(key, "org", "a.example", days=30)
    leaf = certificates.build_server_cert(
        ca, key, certificates.new_key("ec-p256"), [x509.DNSName("a.example")], 397
    )
    assert leaf.not_valid_after_utc <= ca.not_valid_after_utc


def test_ca_rotation_then_retirement(pki_inv: Inventory) -> None:
    p = pki.paths(pki_inv)
    old = pki.read_cert(p.ca_cert)
    new = pki.rotate_ca(pki_inv, PASSPHRASE)
    assert [c.serial_number for c in pki.trusted_cas(pki_inv)] == [
        old.serial_number,
        new.serial_number,
    ]
    assert pki.trust_bundle(pki_inv) == certificates.cert_pem(old) + certificates.cert_pem(new)
    with pytest.raises(PkiError, match="a CA rotation is already under way"):
        pki.rotate_ca(pki_inv, PASSPHRASE)
    pki.read_cert(p.server_cert).verify_directly_issued_by(old)

    retired = pki.retire_ca(pki_inv, PASSPHRASE)
    assert pki.read_cert(retired / "ca.crt") == old
    assert pki.trusted_cas(pki_inv) == [new]
    pki.read_cert(p.server_cert).verify_directly_issued_by(new)
    pki.check_server(pki_inv)
    result = openssl(
        "verify", "-purpose", "sslserver", "-CAfile", str(p.ca_cert), str(p.server_cert)
    )
    assert result.returncode == 0
    with pytest.raises(PkiError, match="no CA rotation under way"):
        pki.retire_ca(pki_inv, PASSPHRASE)


def test_rotation_needs_the_right_passphrase(pki_inv: Inventory) -> None:
    with pytest.raises(PkiError, match="wrong CA passphrase"):
        pki.rotate_ca(pki_inv, "not-the-passphrase")
    assert not pki.paths(pki_inv).next_ca_cert.exists()


def test_damaged_local_state_is_caught_before_any_upload(pki_inv: Inventory) -> None:
    p = pki.paths(pki_inv)
    pki.check_server(pki_inv)
    good_key = p.server_key.read_bytes()
    p.server_key.write_bytes(certificates.key_pem(certificates.new_key("ec-p256")))
    with pytest.raises(
        PkiError, match=r"server\.crt: does not match server\.key; run 'invoke pki\.renew'"
    ):
        pki.check_server(pki_inv)
    p.server_key.write_bytes(good_key)
    # A name the CA may sign for (under the domain), not in the certificate yet.
    renamed = pki_inv.model_copy(
        update={
            "registry": pki_inv.registry.model_copy(
                update={"extra_names": ["eu.registry.unit.test"]}
            )
        }
    )
    with pytest.raises(PkiError, match=r"differ from the inventory's .*run 'invoke pki\.renew'"):
        pki.check_server(renamed)


def rogue_certificate(p: pki.Paths, tmp_path: Path, name: x509.GeneralName) -> Path:
    """A certificate for ``name``, signed with the registry's CA key (as whoever stole it
    would): clients must refuse it for every name the CA was not made for."""
    ca_key = pki.read_key(p.ca_key, PASSPHRASE)
    leaf = certificates.build_server_cert(
        pki.read_cert(p.ca_cert), ca_key, certificates.new_key("ec-p256"), [name], 30
    )
    path = tmp_path / "rogue.crt"
    path.write_bytes(certificates.cert_pem(leaf))
    return path


def gnutls_verify(ca: Path, cert: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["certtool", "--verify", "--load-ca-certificate", str(ca), "--infile", str(cert)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_new_ca_has_critical_name_constraints_for_the_registrys_names(
    pki_inv: Inventory,
) -> None:
    text = openssl("x509", "-noout", "-text", "-in", str(pki.paths(pki_inv).ca_cert)).stdout
    assert "X509v3 Name Constraints: critical" in text
    permitted = text.split("Permitted:", 1)[1].split("Signature Algorithm", 1)[0].split()
    assert permitted == [
        "DNS:registry.unit.test",
        "DNS:registry",
        "DNS:alt.unit.test",
        "IP:127.0.0.1/255.255.255.255",
        "IP:0:0:0:0:0:0:0:1/FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF",
    ]


@pytest.mark.parametrize(
    "name",
    [
        x509.DNSName("www.example.com"),
        x509.DNSName("unit.test"),  # the domain's parent
        x509.DNSName("registry.unit.test.evil.example"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
    ],
)
def test_a_certificate_for_another_name_from_the_ca_is_refused_by_every_library(
    pki_inv: Inventory, tmp_path: Path, name: x509.GeneralName
) -> None:
    p = pki.paths(pki_inv)
    rogue = rogue_certificate(p, tmp_path, name)
    by_openssl = openssl("verify", "-purpose", "sslserver", "-CAfile", str(p.ca_cert), str(rogue))
    assert by_openssl.returncode != 0
    assert "subtree violation" in by_openssl.stdout + by_openssl.stderr
    by_gnutls = gnutls_verify(p.ca_cert, rogue)
    assert "violates the signer's constraints" in by_gnutls.stdout, by_gnutls.stdout
    with pytest.raises(VerificationError):
        verifier_for(p, name).verify(pki.read_cert(rogue), [])
    # The registry's own certificate, from the same CA, passes all three.
    assert "Chain verification output: Verified." in gnutls_verify(p.ca_cert, p.server_cert).stdout
    verifier_for(p, x509.DNSName("registry.unit.test")).verify(pki.read_cert(p.server_cert), [])


def test_a_ca_for_a_registry_without_addresses_may_sign_for_no_address() -> None:
    constraints = certificates.name_constraints("registry.example", ["alt.example"], [])
    address = x509.IPAddress(ipaddress.ip_address("192.0.2.1"))
    assert not certificates.permitted(constraints, address)
    assert certificates.permitted(constraints, x509.DNSName("registry.example"))
    assert certificates.permitted(constraints, x509.DNSName("eu.alt.example"))
    assert not certificates.permitted(constraints, x509.DNSName("example"))


def test_a_name_added_later_needs_a_new_ca(pki_inv: Inventory) -> None:
    later = pki_inv.model_copy(
        update={
            "registry": pki_inv.registry.model_copy(
                update={"extra_names": [*pki_inv.registry.extra_names, "new.example"]}
            )
        }
    )
    with pytest.raises(PkiError, match=r"new\.example is not one of them.*pki\.rotate-ca"):
        pki.issue_server(later, PASSPHRASE)
    with pytest.raises(PkiError, match=r"the CA cannot sign for them: move .*pki\.rotate-ca"):
        pki.check_server(later)  # what a deploy says
    pki.rotate_ca(later, PASSPHRASE)
    with pytest.raises(PkiError, match=r"cannot sign for them: finish .*pki\.retire-ca"):
        pki.check_server(later)
    # A name added again during the rotation: retire-ca refuses before it swaps anything.
    again = later.model_copy(
        update={
            "registry": later.registry.model_copy(
                update={"extra_names": [*later.registry.extra_names, "newer.example"]}
            )
        }
    )
    p = pki.paths(later)
    before = [path.read_bytes() for path in (p.ca_cert, p.next_ca_cert, p.server_cert)]
    with pytest.raises(PkiError, match=r"newer\.example is not one of them"):
        pki.retire_ca(again, PASSPHRASE)
    assert [path.read_bytes() for path in (p.ca_cert, p.next_ca_cert, p.server_cert)] == before
    pki.retire_ca(later, PASSPHRASE)
    pki.check_server(later)
    sans = certificates.cert_sans(pki.read_cert(pki.paths(later).server_cert))
    assert "new.example" in sans


def test_show_says_what_the_ca_may_sign_for(pki_inv: Inventory) -> None:
    lines = certificates.describe("CA", pki.read_cert(pki.paths(pki_inv).ca_cert), 30)
    only = "registry.unit.test, registry, alt.unit.test, 127.0.0.1/32, ::1/128"
    assert f"  names:       only {only}" in lines
    old = certificates.build_ca(certificates.new_key("ec-p256"), "org", "a.example", 30)
    assert any("no Name Constraints" in line for line in certificates.describe("CA", old, 30))
