"""Files for a host: what to place (:class:`Upload`) and how, as one tar stream.

The stream goes to a root script (``templates/sh/upload.sh.j2``) that unpacks it
into a private folder under /run and moves each file into place atomically, so a
half-written file never stands where a service reads it, and a connection lost
halfway leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from tasks import scripts


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Upload:
    """One file to place on the host: content, mode, owner and group (numeric)."""

    path: str
    content: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0

    @property
    def digest(self) -> str:
        return sha256(self.content)

    @property
    def stat(self) -> str:
        """What ``stat -c '%a %u %g'`` prints when the file is as wanted."""
        return f"{self.mode:o} {self.uid} {self.gid}"

    @property
    def fact(self) -> str:
        """What a facts script reports (``file:<path>``) when the file is as wanted."""
        return f"{self.digest} {self.stat}"


def archive(files: Sequence[Upload]) -> bytes:
    """A tar of the files' contents, named 0, 1, ... in order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for index, file in enumerate(files):
            info = tarfile.TarInfo(str(index))
            info.size, info.mode = len(file.content), 0o600
            tar.addfile(info, io.BytesIO(file.content))
    return buffer.getvalue()


def upload_script(files: Sequence[Upload]) -> str:
    """The root script that reads :func:`archive` on stdin and places each file."""
    placed = []
    for file in files:
        dest = PurePosixPath(file.path)
        placed.append(
            {
                "path": file.path,
                "folder": str(dest.parent),
                "part": f"{dest.parent}/.{dest.name}.regkit-new",
                "mode": f"{file.mode:o}",
                "uid": file.uid,
                "gid": file.gid,
            }
        )
    return scripts.script("upload", files=placed)
