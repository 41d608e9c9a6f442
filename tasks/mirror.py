"""``invoke mirror.*``: what the pull-through cache needs from the local state.

- **Who may read it.** Docker's daemon never sends a login to a registry mirror
  (moby#30880: it sends Docker Hub's, or none), so a mirror behind a password would
  be skipped in silence and every pull would go to Docker Hub again. Clients prove
  themselves with a TLS client certificate instead, which Docker, containerd and
  podman all send to a mirror: ``trust-ca --mirror`` gives each host its own, signed
  by the mirror's client CA (``<state_dir>/pki/mirror-clients-ca.key``, 0600, made
  on first use; it signs nothing else), and nginx asks for one on the mirror's port.
- **The upstream's login**, when it needs one (a paid Docker Hub account lifts the
  pull limits): ``invoke mirror.set-credentials`` keeps it in
  ``<state_dir>/mirror-credentials.json`` (0600); it reaches a registry host only
  inside the mirror's 0600 config.
- **The upstream's CA**, when no public CA signed its certificate (``ca_file``).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from invoke import Collection, Context

from tasks import certificates, inventory, pki
from tasks.cli import task
from tasks.errors import RegkitError, StateError
from tasks.inventory import Inventory
from tasks.report import Report
from tasks.state import atomic_write, ensure_private_dir

CREDENTIALS = "mirror-credentials.json"
CLIENT_CA_DAYS = 3650
CLIENT_NAME = "regkit mirror client"
# The name in the deploy's own client certificate (no inventory alias can hold a space).
PROBE = "regkit probe"


@dataclass(frozen=True)
class Login:
    """The upstream's user name and password (never shown: not in repr either)."""

    username: str
    password: str = field(repr=False)


def credentials_path(inv: Inventory) -> Path:
    return inv.state_path / CREDENTIALS


def check_login(username: str, password: str) -> Login:
    for what, value in (("user name", username), ("password", password)):
        if not value:
            raise RegkitError(f"the upstream's {what} is empty")
        if not value.isprintable():
            raise RegkitError(f"the upstream's {what} holds control characters")
    return Login(username, password)


def read_login(inv: Inventory) -> Login | None:
    """The upstream's login from the local state; None when none is stored (anonymous)."""
    path = credentials_path(inv)
    try:
        data = json.loads(path.read_text())
        return check_login(str(data["username"]), str(data["password"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, RegkitError):
        raise StateError(
            f"{path}: not the login this tool writes; store it again with "
            "`invoke mirror.set-credentials`"
        ) from None


def upstream_ca(inv: Inventory) -> bytes | None:
    """The PEM of ``registry.mirror.ca_file``, checked to hold certificates; None without."""
    mirror = inv.registry.mirror
    if mirror is None or not mirror.ca_file:
        return None
    return inv.ca_pem("registry.mirror.ca_file", mirror.ca_file, "the upstream registry's")


def client_ca_paths(inv: Inventory) -> tuple[Path, Path]:
    folder = inv.state_path / "pki"
    return folder / "mirror-clients-ca.key", folder / "mirror-clients-ca.crt"


def build_client_ca(key: ec.EllipticCurvePrivateKey, domain: str) -> x509.Certificate:
    """The CA that signs the mirror's client certificates, and nothing else."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{CLIENT_NAME}s of {domain}")])
    usage = certificates.key_usage("digital_signature", "key_cert_sign", "crl_sign")
    return (
        certificates.self_signed(key, name, CLIENT_CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def client_ca(inv: Inventory) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The mirror's client CA, made on first use (key 0600, unencrypted: trust-ca uses it
    unattended, and it can only admit a client to the cache)."""
    key_file, cert_file = client_ca_paths(inv)
    if not (key_file.exists() and cert_file.exists()):
        ensure_private_dir(key_file.parent)
        new = ec.generate_private_key(ec.SECP256R1())
        atomic_write(key_file, certificates.key_pem(new), mode=0o600)
        atomic_write(cert_file, certificates.cert_pem(build_client_ca(new, inv.registry.domain)))
    key = pki.read_key(key_file)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise StateError(f"{key_file}: not the P-256 key this tool makes; remove it and its .crt")
    return key, x509.load_pem_x509_certificate(cert_file.read_bytes())


def issue_client(inv: Inventory, host: str) -> tuple[bytes, bytes]:
    """A fresh key and client certificate (PEM) for ``host``, from the client CA."""
    ca_key, ca_cert = client_ca(inv)
    key = ec.generate_private_key(ec.SECP256R1())
    now = certificates.utc_now()
    days = dt.timedelta(days=inv.pki.server_days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{CLIENT_NAME} {host}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - certificates.CLOCK_SKEW)
        .not_valid_after(min(now + days, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(certificates.key_usage("digital_signature"), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return certificates.key_pem(key), certificates.cert_pem(cert)


def client_current(inv: Inventory, host: str, pem: bytes) -> bool:
    """Whether ``pem`` is ``host``'s client certificate from this client CA, with more than
    ``pki.warn_days`` left."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return False
    ca_cert = client_ca(inv)[1]
    name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return (
        cert.issuer == ca_cert.subject
        and bool(name)
        and name[0].value == f"{CLIENT_NAME} {host}"
        and certificates.days_left(cert) > inv.pki.warn_days
        and _signed_by(cert, ca_cert)
    )


def probe_client(inv: Inventory) -> tuple[bytes, bytes]:
    """The deploy's own client key and certificate (PEM), to prove the mirror from the
    registry host: kept in the local state, issued again only when no longer current."""
    folder = inv.state_path / "pki"
    key_file, cert_file = folder / "mirror-probe.key", folder / "mirror-probe.crt"
    if not (cert_file.exists() and key_file.exists()) or not client_current(
        inv, PROBE, cert_file.read_bytes()
    ):
        key, cert = issue_client(inv, PROBE)
        atomic_write(key_file, key, mode=0o600)
        atomic_write(cert_file, cert)
    return key_file.read_bytes(), cert_file.read_bytes()


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def ask_login() -> Login:
    """At a terminal: prompt (the password unechoed). Else: two lines on stdin."""
    if sys.stdin.isatty():
        return check_login(input("Upstream user name: ").strip(), getpass.getpass("Password: "))
    lines = sys.stdin.read().splitlines()
    if len(lines) != 2:
        raise RegkitError(
            "give two lines on standard input: the upstream's user name, then its password"
        )
    return check_login(lines[0].strip(), lines[1])


@task(name="set-credentials")
def set_credentials(c: Context) -> None:
    """Store the login the mirror uses at its upstream (local state, 0600).

    At a terminal it asks for both (the password unechoed); otherwise it reads two
    lines from standard input: the user name, then the password (for Docker Hub, an
    access token). The next deploy puts it in each registry host's 0600 mirror config.
    """
    inv = inventory.load()
    login = ask_login()
    ensure_private_dir(inv.state_path)
    text = json.dumps({"username": login.username, "password": login.password}) + "\n"
    report = Report()
    where = f"{credentials_path(inv)} (0600), user {login.username}"
    if atomic_write(credentials_path(inv), text, mode=0o600):
        report.changed("local", "mirror login", f"stored in {where}")
    else:
        report.unchanged("local", "mirror login", f"the same one is in {where}")
    if inv.registry.mirror is None:
        report.info("note: registry.mirror is not set; the login waits for it")
    report.summary()


ns = Collection("mirror", set_credentials)
