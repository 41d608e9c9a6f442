"""The token service's signing key and certificate (token auth).

``<state_dir>/pki/token.key`` (0600) and ``token.crt``: a P-256 key and a
self-signed certificate that may only sign (digital signature), made once by the
first deploy and kept. Tokens carry the certificate in their ``x5c`` header; the
registry trusts exactly this certificate (``auth.token.rootcertbundle``), not the
CA, so neither the CA nor the TLS key can sign tokens, and this key can sign
nothing else. It is not encrypted: the token service reads it unattended.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tasks import certificates
from tasks.inventory import Inventory
from tasks.state import atomic_write, ensure_private_dir

DAYS = 3650
ISSUER = "regkit token service"


def key_path(inv: Inventory) -> Path:
    return inv.state_path / "pki" / "token.key"


def cert_path(inv: Inventory) -> Path:
    return inv.state_path / "pki" / "token.crt"


def build_cert(key: ec.EllipticCurvePrivateKey, domain: str, days: int = DAYS) -> x509.Certificate:
    """A self-signed certificate for the token key, valid for signatures only."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{ISSUER} for {domain}")])
    return (
        certificates.self_signed(key, name, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(certificates.key_usage("digital_signature"), critical=True)
        .sign(key, hashes.SHA256())
    )


def ensure(inv: Inventory) -> bool:
    """Make the token key and certificate if there are none; True when made."""
    key, cert = key_path(inv), cert_path(inv)
    if key.exists() and cert.exists():
        return False
    ensure_private_dir(key.parent)
    new = ec.generate_private_key(ec.SECP256R1())
    atomic_write(key, certificates.key_pem(new), mode=0o600)
    atomic_write(cert, certificates.cert_pem(build_cert(new, inv.registry.domain)), mode=0o644)
    return True


def material(inv: Inventory) -> tuple[bytes, bytes]:
    """The token key and certificate (PEM), made on first use like the http secret."""
    ensure(inv)
    return key_path(inv).read_bytes(), cert_path(inv).read_bytes()


def fingerprint(inv: Inventory) -> str:
    """The token certificate's SHA-256 (the key and certificate are made on first use)."""
    cert = material(inv)[1]
    return certificates.fingerprint(x509.load_pem_x509_certificate(cert))
