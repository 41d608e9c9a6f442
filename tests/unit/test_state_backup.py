"""The local state's encrypted backup: sealing, opening, and what an archive may hold."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from tasks import state_backup
from tasks.errors import StateError

SOURCE = Path("state.bak")


def test_sealed_state_opens_only_with_its_passphrase() -> None:
    sealed = state_backup.seal(b"the state", "right passphrase")
    assert sealed.startswith(state_backup.MAGIC)
    assert b"the state" not in sealed
    assert state_backup.unseal(sealed, "right passphrase", SOURCE) == b"the state"
    with pytest.raises(StateError, match="the passphrase does not open it"):
        state_backup.unseal(sealed, "wrong passphrase", SOURCE)


def test_a_changed_byte_is_refused() -> None:
    sealed = bytearray(state_backup.seal(b"the state", "right passphrase"))
    sealed[-1] ^= 1
    with pytest.raises(StateError, match="or the file was changed"):
        state_backup.unseal(bytes(sealed), "right passphrase", SOURCE)
    with pytest.raises(StateError, match="not a regkit state backup"):
        state_backup.unseal(b"PK\x03\x04zip", "right passphrase", SOURCE)


def test_the_archive_holds_the_state_without_its_record(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.key").write_text("key")
    (tmp_path / state_backup.RECORD).write_text("{}")
    with tarfile.open(fileobj=io.BytesIO(state_backup.archive(tmp_path))) as tar:
        assert sorted(tar.getnames()) == ["pki", "pki/ca.key"]
        assert state_backup.checked_members(tar, SOURCE)


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside", "pki/../../outside"])
def test_an_archive_that_reaches_outside_is_refused(name: str) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        tar.addfile(info, io.BytesIO(b""))
    refused = pytest.raises(StateError, match="which a state backup never does")
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar, refused:
        state_backup.checked_members(tar, SOURCE)


def test_a_link_in_an_archive_is_refused() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("pki/ca.key")
        info.type, info.linkname = tarfile.SYMTYPE, "/root/.ssh/id_ed25519"
        tar.addfile(info)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar, pytest.raises(StateError):
        state_backup.checked_members(tar, SOURCE)


def test_newest_change_ignores_the_record(tmp_path: Path) -> None:
    (tmp_path / "users").write_text("x")
    os.utime(tmp_path / "users", (1000, 1000))
    os.utime(tmp_path, (1000, 1000))
    (tmp_path / state_backup.RECORD).write_text(json.dumps({"at": 2000}))
    os.utime(tmp_path / state_backup.RECORD, (3000, 3000))
    assert state_backup.newest_change(tmp_path) == 1000


def test_a_truncated_file_is_one_clear_error() -> None:
    sealed = state_backup.seal(b"the state", "right passphrase")
    for cut in (len(state_backup.MAGIC) + 3, state_backup.HEADER + 5):
        with pytest.raises(StateError, match="truncated or damaged"):
            state_backup.unseal(sealed[:cut], "right passphrase", SOURCE)
