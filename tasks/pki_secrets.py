"""The CA's secrets as this machine holds them: its passphrase (from
``REGISTRY_CA_PASSPHRASE`` or a prompt, never from argv) and reading its encrypted
key, with a clear message for every way that fails."""

from __future__ import annotations

import base64
import getpass
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tasks import certificates
from tasks.errors import PkiError

PASSPHRASE_ENV = "REGISTRY_CA_PASSPHRASE"  # noqa: S105 - a variable name
MIN_PASSPHRASE = 8


def read_key(path: Path, passphrase: str | None = None) -> certificates.PrivateKey:
    """Load a private key; a wrong passphrase or damaged file is a clear PkiError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{path}: missing; run 'invoke pki.init' first") from None
    try:
        key = serialization.load_pem_private_key(
            data, password=passphrase.encode() if passphrase else None
        )
    except TypeError:
        if passphrase is None:
            raise PkiError(
                f"{path}: the key is encrypted but no passphrase was given; "
                f"set {PASSPHRASE_ENV} or run interactively"
            ) from None
        raise PkiError(f"{path}: the key is not encrypted; it should be (damaged?)") from None
    except ValueError as exc:
        # A wrong passphrase mostly fails the decryption; about once in 256 it decrypts
        # to garbage with valid padding instead, which then fails to parse. An intact
        # encrypted PEM tells that case from a damaged file.
        wrong = "password" in str(exc).lower() or _intact_encrypted_pem(data)
        if passphrase is not None and wrong:
            raise PkiError(f"{path}: wrong CA passphrase") from None
        raise PkiError(
            f"{path}: not a readable private key (truncated or damaged); restore it from "
            "a backup, or make a new one with 'invoke pki.init --force'"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"{path}: unsupported key type {type(key).__name__}")
    return key


def _intact_encrypted_pem(data: bytes) -> bool:
    """Whether ``data`` is one whole encrypted PKCS#8 PEM block: its armour, base64 body
    and outer DER length all agree (a truncated or cut file fails one of them)."""
    begin, end = b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"-----END ENCRYPTED PRIVATE KEY-----"
    text = data.strip()
    if not (text.startswith(begin) and text.endswith(end)):
        return False
    try:
        der = base64.b64decode(b"".join(text[len(begin) : -len(end)].split()), validate=True)
    except ValueError:
        return False
    if len(der) < 2 or der[0] != 0x30:
        return False
    if der[1] < 0x80:
        return der[1] + 2 == len(der)
    size = der[1] & 0x7F
    return int.from_bytes(der[2 : 2 + size], "big") + 2 + size == len(der)


def has_terminal() -> bool:
    """Whether a prompt can be answered: getpass asks at /dev/tty (else it would read
    stdin, echoing, and end in an EOFError where stdin is closed)."""
    try:
        with open("/dev/tty", "rb"):
            return True
    except OSError:
        return False


def ask_passphrase(confirm: bool) -> str:
    """The CA passphrase: from the environment, else asked (twice when ``confirm``)."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value is None:
        if not has_terminal():
            raise PkiError(
                f"the CA passphrase is needed and there is no terminal to ask it at; set "
                f"{PASSPHRASE_ENV} (scripts, CI) or run this at a terminal"
            )
        value = getpass.getpass(f"CA passphrase (scripts set {PASSPHRASE_ENV}): ")
        if confirm and getpass.getpass("CA passphrase (again): ") != value:
            raise PkiError("the two passphrases differ; nothing was written")
    if len(value) < MIN_PASSPHRASE:
        raise PkiError(
            f"the CA passphrase must be at least {MIN_PASSPHRASE} characters "
            f"(from {PASSPHRASE_ENV} or the prompt)"
        )
    return value
