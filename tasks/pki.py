"""The registry's PKI, made locally with ``cryptography``: a CA and a server certificate.

Files (under ``<state_dir>/pki``):

- ``ca.key``  the CA key, PKCS#8 encrypted with the CA passphrase (0600). It never
  leaves this machine.
- ``ca.crt``  the CA certificate that every client trusts.
- ``server.key`` / ``server.crt``  the key and certificate nginx serves (key 0600).

The passphrase comes from ``REGISTRY_CA_PASSPHRASE`` or a prompt, never from argv.

This module keeps that state on disk (init, renew, CA rotation, the checks before a
deploy) and holds the ``pki.*`` tasks; the keys and certificates themselves are built
and inspected in ``tasks.certificates``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from invoke import Collection, Context

from tasks import certificates, inventory
from tasks.cli import task
from tasks.errors import PkiError
from tasks.inventory import Inventory
from tasks.pki_secrets import ask_passphrase, read_key
from tasks.report import Report
from tasks.state import atomic_write, ensure_private_dir


@dataclass(frozen=True)
class Paths:
    """Where the PKI files of one state directory live."""

    root: Path

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def next_ca_key(self) -> Path:
        return self.root / "ca-next.key"

    @property
    def next_ca_cert(self) -> Path:
        return self.root / "ca-next.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"


def paths(inv: Inventory) -> Paths:
    return Paths(inv.state_path / "pki")


def read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise PkiError(f"{path}: missing; run 'invoke pki.init' first") from None
    except ValueError:
        raise PkiError(
            f"{path}: not a PEM certificate (damaged?); restore it from a backup "
            "or run 'invoke pki.renew' (server) / 'invoke pki.init --force' (CA)"
        ) from None


def wanted_sans(inv: Inventory) -> list[x509.GeneralName]:
    reg = inv.registry
    return certificates.subject_alt_names(reg.domain, reg.extra_names, reg.extra_ips)


def new_ca(inv: Inventory, key: certificates.PrivateKey) -> x509.Certificate:
    """A CA for this registry: clients that trust it trust it for the registry's names
    and addresses only (critical Name Constraints), not for every site."""
    reg = inv.registry
    constraints = certificates.name_constraints(reg.domain, reg.extra_names, reg.extra_ips)
    return certificates.build_ca(
        key, inv.pki.organization, reg.domain, inv.pki.ca_days, constraints
    )


def names_outside(inv: Inventory, ca: x509.Certificate) -> list[str]:
    """The inventory's names that the CA's Name Constraints do not permit (none for a CA
    without constraints)."""
    constraints = certificates.ca_constraints(ca)
    if constraints is None:
        return []
    return [str(n.value) for n in wanted_sans(inv) if not certificates.permitted(constraints, n)]


def refuse_names_outside(inv: Inventory, ca: x509.Certificate, path: Path) -> None:
    """A CA's Name Constraints are fixed when it is made: a name the inventory added
    later needs a new CA."""
    outside = names_outside(inv, ca)
    if outside:
        raise PkiError(
            f"{path}: this CA may sign only for the names it was made for, and "
            f"{', '.join(outside)} is not one of them; move to a new CA for the "
            "inventory's names with 'invoke pki.rotate-ca' (README, 'Moving to a new CA')"
        )


def issue_server(inv: Inventory, passphrase: str) -> x509.Certificate:
    """Issue a new server key and certificate from the existing CA; write both."""
    p = paths(inv)
    ca_cert = read_cert(p.ca_cert)
    refuse_names_outside(inv, ca_cert, p.ca_cert)
    ca_key = read_key(p.ca_key, passphrase)
    key = certificates.new_key(inv.pki.key_type)
    cert = certificates.build_server_cert(
        ca_cert, ca_key, key, wanted_sans(inv), inv.pki.server_days
    )
    atomic_write(p.server_key, certificates.key_pem(key), mode=0o600)
    atomic_write(p.server_cert, certificates.cert_pem(cert), mode=0o644)
    return cert


def trusted_cas(inv: Inventory) -> list[x509.Certificate]:
    """The CAs clients must trust: the current one, and the next one during a rotation."""
    p = paths(inv)
    cas = [read_cert(p.ca_cert)]
    if p.next_ca_cert.exists():
        cas.append(read_cert(p.next_ca_cert))
    return cas


def trust_bundle(inv: Inventory) -> bytes:
    """Every trusted CA as one PEM file (Docker's certs.d and the host's own check use it)."""
    return b"".join(certificates.cert_pem(ca) for ca in trusted_cas(inv))


def rotate_ca(inv: Inventory, passphrase: str) -> x509.Certificate:
    """Make the next CA beside the current one; nothing it signs is served yet."""
    p = paths(inv)
    read_key(p.ca_key, passphrase)
    if p.next_ca_cert.exists() or p.next_ca_key.exists():
        raise PkiError(
            f"{p.next_ca_cert}: a CA rotation is already under way; finish it with "
            "'invoke pki.retire-ca' (after 'fab trust-ca' and 'fab deploy')"
        )
    key = certificates.new_key(inv.pki.key_type)
    ca = new_ca(inv, key)
    atomic_write(p.next_ca_key, certificates.key_pem(key, passphrase), mode=0o600)
    atomic_write(p.next_ca_cert, certificates.cert_pem(ca), mode=0o644)
    return ca


def retire_ca(inv: Inventory, passphrase: str) -> Path:
    """Make the next CA the current one, re-issue the server certificate from it, and
    keep the old CA in a ``pki.retired-*`` folder. Returns that folder."""
    p = paths(inv)
    if not p.next_ca_cert.exists():
        raise PkiError(
            f"{p.next_ca_cert}: no CA rotation under way; start one with 'invoke pki.rotate-ca'"
        )
    read_key(p.next_ca_key, passphrase)
    # The server certificate is issued after the swap: check its names first, so that a
    # refusal leaves the rotation as it was.
    refuse_names_outside(inv, read_cert(p.next_ca_cert), p.next_ca_cert)
    retired = p.root.parent / f"pki.retired-{certificates.utc_now():%Y%m%dT%H%M%SZ}"
    ensure_private_dir(retired)
    for old in (p.ca_key, p.ca_cert, p.server_key, p.server_cert):
        shutil.copy2(old, retired / old.name)
    os.replace(p.next_ca_key, p.ca_key)
    os.replace(p.next_ca_cert, p.ca_cert)
    issue_server(inv, passphrase)
    return retired


def ca_exists(p: Paths) -> bool:
    return p.ca_key.exists() or p.ca_cert.exists()


def refuse_existing_ca(p: Paths) -> None:
    """Raise unless ``p`` has no CA yet: an existing CA is never replaced by accident."""
    if ca_exists(p):
        raise PkiError(
            f"{p.root}: a CA already exists and is kept (clients trust it); use "
            "'invoke pki.renew' for a new server certificate, or 'invoke pki.init --force' "
            "to replace the CA (every client must then trust the new one)"
        )


def init_pki(inv: Inventory, passphrase: str, force: bool = False) -> Path | None:
    """Create the CA and the server certificate. Returns the backup folder, if any."""
    p = paths(inv)
    backup = None
    if not force:
        refuse_existing_ca(p)
    elif ca_exists(p):
        stamp = certificates.utc_now().strftime("%Y%m%dT%H%M%SZ")
        backup = p.root.parent / f"pki.bak-{stamp}"
        shutil.copytree(p.root, backup)
        os.chmod(backup, 0o700)
    ensure_private_dir(p.root)
    ca_key = certificates.new_key(inv.pki.key_type)
    ca_cert = new_ca(inv, ca_key)
    atomic_write(p.ca_key, certificates.key_pem(ca_key, passphrase), mode=0o600)
    atomic_write(p.ca_cert, certificates.cert_pem(ca_cert), mode=0o644)
    issue_server(inv, passphrase)
    return backup


def require(inv: Inventory) -> None:
    """Raise PkiError naming the fix unless the CA and the server key and certificate exist."""
    p = paths(inv)
    for path in (p.ca_cert, p.server_cert, p.server_key):
        if not path.exists():
            raise PkiError(f"{path}: missing; run 'invoke pki.init' (or 'invoke pki.renew')")


def check_server(inv: Inventory) -> None:
    """Refuse to deploy a server certificate that is damaged, expired, not from this CA,
    not for this key, or for other names than the inventory's."""
    p = paths(inv)
    ca, cert = read_cert(p.ca_cert), read_cert(p.server_cert)
    key = read_key(p.server_key)
    fix = "run 'invoke pki.renew'"
    if cert.public_key() != key.public_key():
        raise PkiError(f"{p.server_cert}: does not match {p.server_key.name}; {fix}")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise PkiError(f"{p.server_cert}: not signed by {p.ca_cert.name}; {fix}") from None
    if certificates.days_left(cert) < 0:
        raise PkiError(f"{p.server_cert}: expired on {cert.not_valid_after_utc:%Y-%m-%d}; {fix}")
    wanted = [str(n.value) for n in wanted_sans(inv)]
    if certificates.cert_sans(cert) != wanted:
        if names_outside(inv, ca):
            fix = (
                "the CA cannot sign for them: finish the CA rotation with 'invoke pki.retire-ca' "
                "(after 'fab trust-ca'), then deploy"
                if p.next_ca_cert.exists()
                else "the CA cannot sign for them: move to a new CA with 'invoke pki.rotate-ca'"
            )
        raise PkiError(
            f"{p.server_cert}: names {certificates.cert_sans(cert)} differ "
            f"from the inventory's {wanted}; {fix}"
        )


@task(
    help={
        "force": "Replace an existing CA (the old PKI is kept in a pki.bak-* folder). "
        "Every client must then trust the new CA."
    }
)
def init(c: Context, force: bool = False) -> None:
    """Create the CA and the registry's server certificate (asks for the CA passphrase).

    At a terminal the passphrase is asked twice; scripts and CI give it in the
    environment variable REGISTRY_CA_PASSPHRASE instead (never on the command line).
    """
    inv = inventory.load()
    report = Report()
    p = paths(inv)
    if not force:
        refuse_existing_ca(p)
    backup = init_pki(inv, ask_passphrase(confirm=True), force=force)
    if backup:
        report.info(f"old PKI kept in {backup}")
    report.changed("local", "CA", f"{p.ca_cert}, key encrypted at {p.ca_key}")
    report.changed(
        "local", "server certificate", ", ".join(certificates.cert_sans(read_cert(p.server_cert)))
    )
    report.info(f"CA SHA-256 fingerprint: {certificates.fingerprint(read_cert(p.ca_cert))}")


@task
def renew(c: Context) -> None:
    """Issue a new server key and certificate from the existing CA (e.g. after adding names)."""
    inv = inventory.load()
    cert = issue_server(inv, ask_passphrase(confirm=False))
    Report().changed(
        "local",
        "server certificate",
        f"serial {cert.serial_number:x}, {', '.join(certificates.cert_sans(cert))}, "
        f"until {cert.not_valid_after_utc:%Y-%m-%d}",
    )


@task
def show(c: Context) -> None:
    """Show the CA and server certificates: names, expiry, fingerprints; warn before expiry."""
    inv = inventory.load()
    p = paths(inv)
    warn = inv.pki.warn_days
    ca, server = read_cert(p.ca_cert), read_cert(p.server_cert)
    lines = certificates.describe("CA", ca, warn)
    lines += certificates.describe("server certificate", server, warn)
    for line in lines:
        print(line)
    if p.next_ca_cert.exists():
        for line in certificates.describe(
            "next CA (rotation under way)", read_cert(p.next_ca_cert), warn
        ):
            print(line)
    wanted = [str(n.value) for n in wanted_sans(inv)]
    if certificates.cert_sans(server) != wanted:
        print(
            f"  WARNING: the server certificate names {certificates.cert_sans(server)} differ "
            f"from the inventory's {wanted}; run 'invoke pki.renew'"
        )


@task(name="rotate-ca")
def rotate_ca_task(c: Context) -> None:
    """Start a CA rotation: make the next CA beside the current one (see README, Day two)."""
    inv = inventory.load()
    ca = rotate_ca(inv, ask_passphrase(confirm=False))
    report = Report()
    report.changed(
        "local", "next CA", f"{paths(inv).next_ca_cert}, SHA-256 {certificates.fingerprint(ca)}"
    )
    report.info(
        "next: 'fab trust-ca' and 'fab deploy' (both CAs trusted), then 'invoke pki.retire-ca'"
    )


@task(name="retire-ca")
def retire_ca_task(c: Context) -> None:
    """Finish a CA rotation: the next CA signs a new server certificate; the old CA retires."""
    inv = inventory.load()
    retired = retire_ca(inv, ask_passphrase(confirm=False))
    report = Report()
    report.changed("local", "CA", f"the next CA is now current; the old one is kept in {retired}")
    report.changed("local", "server certificate", "issued by the new CA")
    report.info("next: 'fab deploy' (serves it), then 'fab trust-ca' (clients drop the old CA)")


ns = Collection("pki", init, renew, show, rotate_ca_task, retire_ca_task)
