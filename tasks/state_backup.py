"""``invoke state.backup`` / ``state.restore``: the local state in one encrypted file.

The state folder (the CA with its key, still encrypted; the server key and
certificate; the token signing key; the password file; the http secret; the
rendered configs) is what makes the registry trusted: lose it and every client
must be told about a new CA. It goes into one tar archive, encrypted with
AES-256-GCM under a key derived from the CA passphrase with scrypt (both from
``cryptography``), written 0600. Without the passphrase the file is noise; with a
wrong one, or a changed byte, restore refuses it.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import secrets
import shutil
import tarfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from invoke import Collection, Context

from tasks import inventory, pki, pki_secrets
from tasks.cli import task
from tasks.errors import StateError
from tasks.inventory import Inventory
from tasks.state import atomic_write

MAGIC = b"regkit-state-v1\n"
SALT, NONCE = 16, 12
# scrypt's cost is log2(N), stored in the header so that a later release may raise it.
COST = 17
HEADER = len(MAGIC) + 1 + SALT + NONCE
# Where the state keeps when it was last backed up (not itself part of the backup).
RECORD = "state-backup.json"


def derive(passphrase: str, salt: bytes, cost: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**cost, r=8, p=1).derive(passphrase.encode())


def seal(plain: bytes, passphrase: str) -> bytes:
    """MAGIC, scrypt's cost, salt, nonce, then the AES-GCM ciphertext; the header is
    authenticated with it."""
    salt, nonce = secrets.token_bytes(SALT), secrets.token_bytes(NONCE)
    header = MAGIC + bytes([COST]) + salt + nonce
    return header + AESGCM(derive(passphrase, salt, COST)).encrypt(nonce, plain, header)


def unseal(sealed: bytes, passphrase: str, source: Path) -> bytes:
    if not sealed.startswith(MAGIC):
        raise StateError(f"{source}: not a regkit state backup (made by 'invoke state.backup')")
    cost = sealed[len(MAGIC)] if len(sealed) > len(MAGIC) else 0
    if len(sealed) < HEADER + 16 or not 14 <= cost <= 22:
        raise StateError(f"{source}: truncated or damaged; use another copy")
    salt = sealed[len(MAGIC) + 1 : len(MAGIC) + 1 + SALT]
    header = sealed[:HEADER]
    try:
        return AESGCM(derive(passphrase, salt, cost)).decrypt(
            header[-NONCE:], sealed[HEADER:], header
        )
    except InvalidTag:
        raise StateError(
            f"{source}: the passphrase does not open it, or the file was changed; "
            f"give the CA passphrase it was made with ({pki_secrets.PASSPHRASE_ENV} or the prompt)"
        ) from None


def archive(folder: Path) -> bytes:
    """The state folder as a tar, without the backup record (pure but for reading)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            if path.name != RECORD and (path.is_file() or path.is_dir()):
                tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return out.getvalue()


def checked_members(tar: tarfile.TarFile, source: Path) -> list[tarfile.TarInfo]:
    """Only plain files and folders under the state folder; anything else refuses all."""
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()):
            raise StateError(f"{source}: holds {m.name!r}, which a state backup never does")
    return members


def newest_change(folder: Path) -> float:
    """The newest modification time of anything in the state, the record aside."""
    times = [p.stat().st_mtime for p in folder.rglob("*") if p.name != RECORD]
    return max(times, default=0.0)


def reminder(inv: Inventory) -> str:
    """A line when the local state changed after its last backup (or has none)."""
    folder = inv.state_path
    if not folder.is_dir():
        return ""
    record = folder / RECORD
    last = json.loads(record.read_text()).get("at", 0.0) if record.exists() else 0.0
    if newest_change(folder) <= last:
        return ""
    since = "has no backup" if not last else "changed since its last backup"
    return (
        f"note: the local state in {folder} (CA, keys, users) {since}: run "
        "'invoke state.backup --to FILE' and keep FILE away from this machine"
    )


@task(name="backup", help={"to": "The file to write (0600); it must not exist yet."})
def backup_state(c: Context, to: str) -> None:
    """Write the local state (CA, keys, users, configs) to one file, encrypted."""
    inv = inventory.load()
    folder, target = inv.state_path, Path(to).expanduser()
    if not pki.ca_exists(pki.paths(inv)):
        raise StateError(f"{folder}: no CA here, so nothing worth a backup; run 'invoke pki.init'")
    if target.exists():
        raise StateError(f"{target}: exists; give a new file name (nothing was written)")
    passphrase = pki.ask_passphrase(confirm=False)
    pki.read_key(pki.paths(inv).ca_key, passphrase)  # the backup opens with this passphrase
    sealed = seal(archive(folder), passphrase)
    atomic_write(target, sealed, 0o600)
    now = dt.datetime.now(dt.UTC).timestamp()
    atomic_write(folder / RECORD, json.dumps({"at": now, "file": str(target.resolve())}) + "\n")
    print(f"[local] state backup: changed ({target}, {len(sealed)} bytes, encrypted, 0600)")


@task(
    name="restore",
    help={
        "file": "A file written by 'invoke state.backup'.",
        "force": "Replace local state that exists (it is moved aside, not deleted).",
    },
)
def restore_state(c: Context, file: str, force: bool = False) -> None:
    """Put the local state back from a 'state.backup' file (asks for the CA passphrase)."""
    inv = inventory.load()
    source, folder = Path(file).expanduser(), inv.state_path
    try:
        sealed = source.read_bytes()
    except OSError as exc:
        raise StateError(f"{source}: cannot read it: {exc.strerror}") from None
    plain = unseal(sealed, pki.ask_passphrase(confirm=False), source)
    staging = folder.with_name(f".{folder.name}.restoring")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700, parents=True)
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        members = checked_members(tar, source)
        extra = {"filter": "fully_trusted"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(staging, members=members, **extra)  # noqa: S202 - members checked above
    if folder.exists() and any(folder.iterdir()):
        if not force:
            shutil.rmtree(staging)
            raise StateError(
                f"{folder}: local state exists; add --force to move it aside and restore"
            )
        aside = folder.with_name(
            f"{folder.name}.before-restore-{int(dt.datetime.now().timestamp())}"
        )
        os.rename(folder, aside)
        print(f"[local] existing state: moved to {aside}")
    if folder.exists():
        folder.rmdir()
    os.rename(staging, folder)
    print(f"[local] state restore: changed ({folder}, {len(members)} entries)")


ns = Collection("state", backup_state, restore_state)
