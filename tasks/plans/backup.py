"""Backups of a registry host: what to copy, in which order, and what a snapshot holds.

Distribution's storage layout (``docker/registry/v2`` under the data directory):
``blobs/sha256/<2>/<hex>/data`` holds content, named by its sha256 and never
changed; ``repositories/<name>/`` holds small link files naming blobs:
``_layers/sha256/<hex>/link`` once a layer is uploaded, ``_manifests/revisions/
sha256/<hex>/link`` once a manifest is put, ``_manifests/tags/<tag>/current/link``
once a tag points to it. The registry writes in that order, content first: a blob
before the layer link to it, the manifest blob before its revision link, the
revision link before the tag.

So a backup reads in the opposite order, while pushes go on: first the tag links,
then the revision links, then the layer links (each pass read whole before the
next is listed), and only then lists the blobs. Whatever a link read names was
written before the link, so it is there when the blobs are listed. Blobs only go
away by garbage collection, which takes the host lock that the backup holds.

Then the snapshot is checked as the registry would serve it, and what it could
not serve is left out, each named in the output:

- links to blobs the host no longer has: distribution's gc deletes blobs but
  leaves their layer links and old tag index links behind (distribution#3851);
- link files caught empty: the registry rewrites a link in place;
- manifests whose config, layers or platform manifests are not all linked in
  their repository, and tags whose manifest is not in the snapshot: an admin's
  DELETE caught half-done (the registry removes the revision link, then the tags).

Every manifest in a snapshot then has all its blobs: a state the registry could
have been in.

Locally, ``<dir>/blobs/sha256/<2>/<hex>`` keeps each blob once, verified against
its name as it arrived; each snapshot ``<dir>/snapshots/<name>/`` is a complete
data directory whose blobs are hard links to that store, plus ``etc-regkit.tar``
(the host's ``/etc/regkit``) and ``snapshot.json``. A snapshot is written under a
temporary name and renamed when complete, so a failed backup leaves the earlier
ones as they were.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tasks.report import human_size

V2 = "docker/registry/v2"
HEX = re.compile(r"^[0-9a-f]{64}$")
# A snapshot's name: when it was taken (UTC) and from which host.
SNAPSHOT = re.compile(r"^(\d{8}T\d{6}Z)-([A-Za-z0-9][A-Za-z0-9._-]*)$")
# Which metadata comes first in the stream: tags, then revisions, then layers.
LINK_ORDER = ("*/_manifests/tags/*", "*/_manifests/revisions/*", "*/_layers/*")


def snapshot_name(now: dt.datetime, alias: str, taken: Iterable[str] = ()) -> str:
    """``20261129T170302Z-regbox``, a second later if a snapshot has that name (pure)."""
    taken = set(taken)
    while (name := f"{now.astimezone(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}-{alias}") in taken:
        now += dt.timedelta(seconds=1)
    return name


def newest_first(names: Iterable[str], alias: str = "") -> list[str]:
    """Snapshot names (of host ``alias`` only, if given), newest first; anything else
    in the folder is ignored."""
    found = (n for n in names if (m := SNAPSHOT.match(n)) and (not alias or m.group(2) == alias))
    return sorted(found, reverse=True)


def to_remove(names: Iterable[str], keep: int, alias: str) -> list[str]:
    """The snapshots of ``alias`` beyond the ``keep`` newest (``keep`` >= 1)."""
    if keep < 1:
        raise ValueError("keep at least one snapshot")
    return newest_first(names, alias)[keep:]


def pick(names: Iterable[str], alias: str, wanted: str) -> str:
    """The snapshot to restore onto ``alias``: ``wanted``, else the newest of that host,
    else the newest when all come from one host. ValueError says why none fits."""
    every = newest_first(names)
    if not every:
        raise ValueError("no snapshot here")
    if wanted:
        if wanted not in every:
            raise ValueError(f"no snapshot {wanted!r}; there are: {', '.join(every)}")
        return wanted
    own = newest_first(every, alias)
    hosts = {SNAPSHOT.match(n).group(2) for n in every}  # type: ignore[union-attr]
    if own:
        return own[0]
    if len(hosts) == 1:
        return every[0]
    raise ValueError(f"snapshots of {', '.join(sorted(hosts))}, none of {alias}: give --snapshot")


def parse_blob_list(text: str) -> dict[str, int]:
    """``<size> sha256/<2>/<hex>/data`` lines (find's output) to {hex: size}.

    A path that is not a blob's (an interrupted write leaves none: the registry
    moves a finished upload into place) is ignored.
    """
    blobs = {}
    for line in text.splitlines():
        size, _, path = line.partition(" ")
        parts = path.split("/")
        if len(parts) == 4 and parts[0] == "sha256" and parts[3] == "data":
            hex_ = parts[2]
            if HEX.match(hex_) and parts[1] == hex_[:2] and size.isdigit():
                blobs[hex_] = int(size)
    return blobs


def link_target(content: bytes) -> str | None:
    """The hex digest a link file names (``sha256:<hex>``), or None."""
    algorithm, _, hex_ = content.decode(errors="replace").strip().partition(":")
    return hex_ if algorithm == "sha256" and HEX.match(hex_) else None


@dataclass
class Metadata:
    """The link files of a snapshot, by path under ``repositories/``."""

    links: dict[str, bytes] = field(default_factory=dict)

    def tags(self) -> dict[tuple[str, str], str]:
        """(repository, tag) -> manifest hex, from each ``tags/<tag>/current/link``."""
        found = {}
        for path, content in self.links.items():
            repo, sep, rest = path.partition("/_manifests/tags/")
            tag, _, tail = rest.partition("/")
            if sep and tail == "current/link" and (hex_ := link_target(content)):
                found[(repo, tag)] = hex_
        return found

    def revisions(self) -> set[tuple[str, str]]:
        """(repository, manifest hex) for each revision link."""
        found = set()
        for path, content in self.links.items():
            repo, sep, _ = path.partition("/_manifests/revisions/")
            if sep and path.endswith("/link") and (hex_ := link_target(content)):
                found.add((repo, hex_))
        return found

    def repositories(self) -> set[str]:
        return {repo for repo, _ in self.revisions()}

    def referenced(self) -> set[str]:
        """Every blob a link names (layers, configs and manifests)."""
        return {h for content in self.links.values() if (h := link_target(content))}

    def drop_links(self, keep: Callable[[str, str | None], bool]) -> list[str]:
        """Leave out each link for which ``keep(path, target)`` is false; their paths."""
        gone = sorted(p for p, c in self.links.items() if not keep(p, link_target(c)))
        for path in gone:
            del self.links[path]
        return gone

    def drop_unservable(self, manifest: Callable[[str], dict[str, Any] | None]) -> list[str]:
        """Leave out what the registry could not serve from this snapshot: manifests
        missing a linked config, layer or platform manifest, then tags whose manifest is
        not here (until nothing changes). ``manifest(hex)`` reads one, or None."""
        gone: list[str] = []
        while True:
            revisions = self.revisions()
            layers = {
                (p.partition("/_layers/")[0], link_target(c))
                for p, c in self.links.items()
                if "/_layers/" in p
            }
            bad = set()
            for repo, hex_ in revisions:
                doc = manifest(hex_)
                needs = [] if doc is None else references(doc)
                linked = all(
                    (repo, h) in layers if kind == "blob" else (repo, h) in revisions
                    for kind, h in needs
                )
                if doc is None or not linked:
                    bad.add(f"{repo}/_manifests/revisions/sha256/{hex_}/")
            tags = {
                f"{repo}/_manifests/tags/{tag}/"
                for (repo, tag), hex_ in self.tags().items()
                if (repo, hex_) not in revisions
            }
            if not bad and not tags:
                return gone
            folders = tuple(sorted(bad | tags))
            gone += folders
            self.drop_links(lambda p, _, f=folders: not p.startswith(f))


def references(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """What a manifest needs in its repository: ("blob", hex) for its config and layers,
    ("manifest", hex) for an index's platforms (pure)."""
    out = []
    for kind, entries in (
        ("blob", [manifest.get("config") or {}, *(manifest.get("layers") or [])]),
        ("manifest", manifest.get("manifests") or []),
    ):
        for entry in entries:
            algorithm, _, hex_ = str(entry.get("digest", "")).partition(":")
            if algorithm == "sha256" and HEX.match(hex_):
                out.append((kind, hex_))
    return out


def blobs_to_fetch(referenced: set[str], stored: set[str]) -> list[str]:
    """The referenced blobs not yet in the local store, in a stable order."""
    return sorted(referenced - stored)


@dataclass(frozen=True)
class Summary:
    """What ``snapshot.json`` says and the closing line reports. ``bytes_total``: the
    snapshot's blobs, links and /etc/regkit; ``bytes_transferred``: what this run
    copied of them (new blobs, and every link and /etc/regkit again)."""

    name: str
    host: str
    repositories: int
    tags: int
    blobs: int
    bytes_total: int
    bytes_transferred: int
    left_out: tuple[str, ...] = ()

    def line(self) -> str:
        return (
            f"snapshot {self.name}: {self.repositories} repositories, {self.tags} tags, "
            f"{self.blobs} blobs, {human_size(self.bytes_transferred)} transferred of "
            f"{human_size(self.bytes_total)}"
        )


@dataclass(frozen=True)
class RestorePlan:
    """What ``fab restore`` does on one host, in order (``--dry-run`` prints it)."""

    snapshot: str
    tags: int
    blobs: int
    bytes_total: int
    aside: str  # where the host's registry data goes first; "" when it has none

    def steps(self) -> list[tuple[str, str]]:
        out = [("registry data", f"moved aside to {self.aside} (kept)")] if self.aside else []
        out += [
            (
                "registry data",
                f"restored from {self.snapshot}: {self.tags} tags, {self.blobs} "
                f"blobs, {human_size(self.bytes_total)}",
            ),
            ("/etc/regkit", f"restored from {self.snapshot}"),
        ]
        return out


def restore_plan(
    snapshot: str, record: dict[str, int], facts: dict[str, str], data_dir: str, now: dt.datetime
) -> RestorePlan:
    """The plan from the snapshot's record and the host's facts (pure)."""
    aside = f"{data_dir}/docker.before-restore-{now:%Y%m%dT%H%M%SZ}" if facts.get("data") else ""
    return RestorePlan(snapshot, record["tags"], record["blobs"], record["bytes_total"], aside)
