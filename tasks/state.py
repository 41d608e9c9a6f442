"""Local state on the operator's machine: where it lives and how it is written.

Everything secret (CA key, server key, password file, the registry's http
secret) lives under the inventory's ``state_dir``. Files are written atomically
(a temp file in the same directory, fsync, rename), so a crash never leaves a
half-written key or password file where a task would read it.
"""

from __future__ import annotations

import os
import secrets
import stat
import tempfile
from pathlib import Path

from tasks.errors import StateError


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents with mode 0700; return it.

    Only a folder made here gets its mode set. One that was there keeps its own: it is
    refused (StateError) when it is no folder, or when other users may open it, since
    secrets go in it; the message says how to make it private.
    """
    made = False
    for p in reversed([p for p in (path, *path.parents) if not p.exists()]):
        try:
            p.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made meanwhile by someone else: not ours to change
        os.chmod(p, 0o700)  # 0700 whatever the umask
        made = p == path
    if not made:
        check_private_dir(path)
    return path


def check_private_dir(path: Path) -> None:
    """StateError unless ``path`` is a folder only its owner may open."""
    try:
        st = path.stat()
    except OSError as exc:
        raise StateError(f"{path}: cannot read it ({exc.strerror})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StateError(f"{path}: not a folder; regkit keeps its state in a folder")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise StateError(
            f"{path}: other users may open this folder (mode {mode:04o}) and regkit keeps "
            f"secrets in it; it changes only folders it made: run chmod 700 {path} if the "
            "folder is yours alone, or give another one"
        )


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644) -> bool:
    """Write ``data`` to ``path`` atomically with ``mode``.

    Returns True when the file changed, False when it already held exactly
    ``data`` with that mode (and then nothing is written).
    """
    payload = data.encode() if isinstance(data, str) else data
    if path.exists() and path.read_bytes() == payload and (path.stat().st_mode & 0o777) == mode:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def http_secret(state_dir: Path) -> str:
    """The registry's ``http.secret``: made once, then always the same.

    It must be stable across restarts and identical on every replica, or
    resumable uploads break; so it is generated on first use and kept.
    """
    path = state_dir / "http-secret"
    if path.exists():
        value = path.read_text().strip()
        if len(value) < 32:
            raise StateError(
                f"{path}: the registry http secret is damaged (too short); "
                "delete the file to generate a new one"
            )
        return value
    ensure_private_dir(state_dir)
    value = secrets.token_urlsafe(48)
    atomic_write(path, value + "\n", mode=0o600)
    return value
