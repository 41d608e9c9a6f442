"""``fab backup``: the registry's data and /etc/regkit, copied to this machine.

While pushes and pulls go on, under the host lock (so no gc or prune runs): the
link files first, in the reverse of the order the registry writes them, then the
blobs they name that the local store lacks, streamed through the SSH connection
and checked against their names as they arrive (see :mod:`tasks.plans.backup` for
why that order gives a state the registry could have been in). Each run makes a
complete snapshot; blobs are kept once and hard-linked into each.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO

from invoke import Collection, Context

from tasks import commands, inventory, scripts, state_backup, storage
from tasks.cli import task
from tasks.errors import RegkitError, RemoteError
from tasks.inventory import Inventory
from tasks.layout import REMOTE_DIR
from tasks.plans import backup as planner
from tasks.plans.backup import V2, Metadata, Summary
from tasks.remote.fanout import each_host, hosts_for
from tasks.remote.lock import host_lock
from tasks.remote.target import Target
from tasks.report import Progress, Report, human_size
from tasks.state import ensure_private_dir

CHUNK = 1 << 20


@contextmanager
def folder_lock(root: Path) -> Iterator[None]:
    """One backup at a time into ``root`` (each removes what others left half-done)."""
    with open(root / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RegkitError(f"{root}: another backup is writing here; wait for it") from None
        yield


def store_path(root: Path, hex_: str) -> Path:
    return root / "blobs" / "sha256" / hex_[:2] / hex_


def blobs_dir(inv: Inventory) -> str:
    return f"{inv.registry.data_dir}/{V2}/blobs"


def links_script(inv: Inventory) -> str:
    return scripts.script(
        "backup-links",
        repositories=f"{inv.registry.data_dir}/{V2}/repositories",
        order=planner.LINK_ORDER,
    )


def read_links(target: Target, inv: Inventory) -> Metadata:
    """Every link file, in the order the script reads them (tags first)."""
    meta = Metadata()
    with (
        target.reading(links_script(inv), "reading the registry's links") as stream,
        tarfile.open(fileobj=stream, mode="r|", ignore_zeros=True) as tar,
    ):
        for member in tar:
            f = tar.extractfile(member) if member.isfile() else None
            if f is not None:
                meta.links[member.name.removeprefix("./")] = f.read()
    return meta


def receive(stream: BinaryIO, root: Path, wanted: set[str], progress: Progress, alias: str) -> None:
    """Write each blob of the tar ``stream`` into the store, checked against its name."""
    received: set[str] = set()
    tmp_dir = ensure_private_dir(root / "blobs" / "tmp")
    with tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK) as tar:
        for member in tar:
            hex_ = member.name.split("/")[2] if member.name.count("/") == 3 else ""
            f = tar.extractfile(member)
            if hex_ not in wanted or f is None:
                raise RemoteError(f"{alias}: the blob stream held {member.name!r}, not asked for")
            digest, tmp = hashlib.sha256(), tmp_dir / hex_
            try:
                with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
                    while chunk := f.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        progress.add(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
                if digest.hexdigest() != hex_:
                    raise RemoteError(
                        f"{alias}: blob sha256:{hex_} is corrupt: its content hashes to "
                        f"sha256:{digest.hexdigest()} (blobs/{member.name} on the host); "
                        "this backup was not written, earlier snapshots are as they were"
                    )
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, ensure_private_dir(store_path(root, hex_).parent) / hex_)
            received.add(hex_)
    if received != wanted:
        raise RemoteError(
            f"{alias}: {len(wanted - received)} blobs did not arrive "
            f"(first sha256:{min(wanted - received)}); earlier snapshots are as they were"
        )


def write_snapshot(root: Path, name: str, meta: Metadata, etc: bytes, summary: Summary) -> Path:
    """The snapshot folder, written under a temporary name, then renamed."""
    snapshots = ensure_private_dir(root / "snapshots")
    for stale in snapshots.glob(".partial-*"):  # a run cut short left it
        shutil.rmtree(stale)
    partial = snapshots / f".partial-{name}"
    data = partial / "registry" / V2
    for path, content in meta.links.items():
        ensure_private_dir((data / "repositories" / path).parent)
        (data / "repositories" / path).write_bytes(content)
    for hex_ in sorted(meta.referenced()):
        folder = ensure_private_dir(data / "blobs" / "sha256" / hex_[:2] / hex_)
        os.link(store_path(root, hex_), folder / "data")
    fd = os.open(partial / "etc-regkit.tar", os.O_WRONLY | os.O_CREAT, 0o600)
    with open(fd, "wb") as f:
        f.write(etc)
    (partial / "snapshot.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
    os.sync()  # every file of the snapshot on disk before it takes its name
    os.replace(partial, snapshots / name)
    os.sync()
    return snapshots / name


def stored_manifest(root: Path, hex_: str) -> dict[str, Any] | None:
    """The manifest kept as blob ``hex_``, or None if it is not one."""
    try:
        doc = json.loads(store_path(root, hex_).read_bytes())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def backup_host(inv: Inventory, target: Target, root: Path, report: Report, keep: int) -> None:
    alias, start = target.alias, time.monotonic()
    existing = (p.name for p in (root / "snapshots").glob("*"))
    name = planner.snapshot_name(dt.datetime.now(dt.UTC), alias, existing)
    meta = read_links(target, inv)
    remote = planner.parse_blob_list(
        target.check(commands.blob_list(blobs_dir(inv)), "listing blobs").stdout
    )
    stale = meta.drop_links(lambda _, hex_: hex_ is not None and hex_ in remote)
    if stale:
        report.info(
            f"[{alias}] {len(stale)} links name no blob on the host (gc leaves them, "
            "distribution#3851; or one was being rewritten): left out"
        )
    stored = {p.name for p in (root / "blobs" / "sha256").glob("*/*")}
    fetch = planner.blobs_to_fetch(meta.referenced(), stored)
    size = sum(remote[h] for h in fetch)
    report.info(
        f"[{alias}] blobs: {len(fetch)} new ({human_size(size)}), {len(stored)} already here"
    )
    progress = Progress(report, alias, size, "blobs")
    if fetch:
        wanted = "".join(f"sha256/{h[:2]}/{h}/data\n" for h in fetch).encode()
        with target.reading(commands.tar_out(blobs_dir(inv)), "copying blobs", wanted) as stream:
            receive(stream, root, set(fetch), progress, alias)
    left_out = meta.drop_unservable(lambda hex_: stored_manifest(root, hex_))
    for folder in left_out:
        report.info(f"[{alias}] {folder.rstrip('/')}: incomplete on the host (a delete "
                    "caught half-done?): left out")  # fmt: skip
    with target.reading(commands.tar_out("/", REMOTE_DIR[1:]), "copying /etc/regkit") as f:
        etc = f.read()
    referenced = meta.referenced()
    small = len(etc) + sum(map(len, meta.links.values()))  # /etc/regkit and the links
    summary = Summary(
        name=name,
        host=alias,
        repositories=len(meta.repositories()),
        tags=len(meta.tags()),
        blobs=len(referenced),
        bytes_total=sum(remote[h] for h in referenced) + small,
        bytes_transferred=size + small,
        left_out=tuple(left_out),
    )
    write_snapshot(root, name, meta, etc, summary)
    took = time.monotonic() - start
    report.changed(alias, "backup", f"{summary.line()}, in {took:.1f} s")
    if keep:
        remove_old(root, keep, report, alias)


def remove_old(root: Path, keep: int, report: Report, alias: str) -> None:
    """Keep the ``keep`` newest snapshots, then drop blobs no snapshot links to."""
    snapshots = root / "snapshots"
    for name in planner.to_remove((p.name for p in snapshots.iterdir()), keep, alias):
        shutil.rmtree(snapshots / name)
        report.changed(alias, f"snapshot {name}", f"removed (keeping the {keep} newest)")
    freed = 0
    for blob in (root / "blobs" / "sha256").glob("*/*"):
        if blob.stat().st_nlink == 1:
            freed += blob.stat().st_size
            blob.unlink()
    if freed:
        report.info(f"[{alias}] {human_size(freed)} of blobs no snapshot needs removed")


@task(
    role="registry",
    help={
        "to": "The folder on this machine to back up into (else the inventory's backup.dir).",
        "prune-keep": "After the backup, keep only the N newest snapshots.",
        "force": "Act on -H hosts whose inventory role is not registry.",
    },
)
def backup(c: Context, to: str = "", prune_keep: int = 0, force: bool = False) -> None:
    """Copy the registry's data and /etc/regkit here: a verified, incremental snapshot."""
    inv = inventory.load()
    storage.needs_filesystem(inv, "fab backup")
    aliases = hosts_for(c, inv, "registry", "backup", force)
    folder = to or inv.backup.dir
    if not folder:
        raise RegkitError(f"{inv.source}: no backup folder; give --to DIR or set backup.dir")
    if prune_keep < 0:
        raise RegkitError("--prune-keep: give how many snapshots to keep (1 or more)")
    try:
        root = ensure_private_dir(inv.resolve(folder))
    except OSError as exc:
        raise RegkitError(f"{folder}: cannot make a backup folder there: {exc}") from None
    keep = prune_keep or inv.backup.keep
    report = Report()

    def work(target: Target) -> None:
        with host_lock(target, "backup"), folder_lock(root):
            try:
                backup_host(inv, target, root, report, keep)
            except tarfile.TarError as exc:
                raise RemoteError(
                    f"{target.alias}: the stream from the host broke off: {exc}"
                ) from None
            except OSError as exc:
                raise RegkitError(f"{root}: cannot write the backup here: {exc}") from None

    each_host(c, inv, aliases, report, "backup", work)
    reminder = state_backup.reminder(inv)
    if reminder:
        report.info(reminder)


ns = Collection("backup", backup)
