"""CA rotation end to end on client1 and b2d: no failed pull at any step."""

from __future__ import annotations

from cryptography import x509

from tasks import certificates, pki, pki_secrets
from tests.lab.conftest import (
    PASSPHRASE,
    Lab,
    fab,
    invoke,
    login,
    must,
    pull_digest,
    push_image,
    served,
    sh,
)

CLIENTS = ("client1", "b2d")
BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def copies(lab: Lab, alias: str, ca: x509.Certificate) -> int:
    line = certificates.cert_pem(ca).decode().splitlines()[1]
    return int(sh(lab.connect(alias), f"grep -c -F -e '{line}' {BUNDLE} || true"))


def test_ca_rotation_never_breaks_a_pull(registry: Lab) -> None:
    env = {**registry.env, pki_secrets.PASSPHRASE_ENV: PASSPHRASE}
    must(fab(registry, "-H", ",".join(CLIENTS), "trust-ca"))
    for alias in CLIENTS:
        login(registry.connect(alias))
    image = push_image(registry.connect("client1"))
    old = pki.read_cert(pki.paths(registry.inventory).ca_cert)

    def every_client_pulls(step: str) -> None:
        for alias in CLIENTS:
            assert pull_digest(registry.connect(alias), image) == image.digest, step

    every_client_pulls("before")
    must(invoke("pki.rotate-ca", env=env))
    new = pki.read_cert(pki.paths(registry.inventory).next_ca_cert)
    every_client_pulls("after pki.rotate-ca")
    out = must(fab(registry, "-H", ",".join(CLIENTS), "trust-ca"))
    for alias, flavor in (("client1", "debian"), ("b2d", "boot2docker")):
        assert f"[{alias}] system CA store ({flavor}): changed (2 CAs trusted" in out
    for alias in CLIENTS:
        assert (copies(registry, alias, old), copies(registry, alias, new)) == (1, 1)
    every_client_pulls("after trust-ca with both CAs")
    must(fab(registry, "-H", "regbox", "deploy"))
    every_client_pulls("after deploy with both CAs")

    must(invoke("pki.retire-ca", env=env))
    every_client_pulls("after pki.retire-ca")
    must(fab(registry, "-H", "regbox", "deploy"))
    assert new.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value in served(
        registry, "issuer"
    )
    every_client_pulls("after deploy of the new server certificate")
    out = must(fab(registry, "-H", ",".join(CLIENTS), "trust-ca"))
    assert "removed (a CA no longer trusted)" in out
    for alias in CLIENTS:
        assert (copies(registry, alias, old), copies(registry, alias, new)) == (0, 1)
    every_client_pulls("after trust-ca dropped the old CA")
    again = must(fab(registry, "-H", ",".join(CLIENTS), "trust-ca"))
    assert "0 changed" in again
