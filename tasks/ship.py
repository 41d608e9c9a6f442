"""``deploy --ship-images``: pinned images carried over SSH to a host that cannot pull them.

A registry host without access to the images' registry (an air-gapped network, Docker
Hub's limits) gets the images the inventory pins from a source that has them: this
machine's Docker (``docker`` on PATH, as ``DOCKER_HOST`` says), or with
``--images-from HOST`` another inventory host's. ``docker save`` there is streamed
through the SSH connection into ``docker load`` on the host, with a progress line, and
the image's layers on the host (their digests, ``RootFS.Layers``: the same whichever image
store holds them, where the ID is not) are then checked against the source's.
The deploy plan decides which images (only those the host lacks); this module only
carries them.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from tasks import commands
from tasks.errors import RegkitError, RemoteError
from tasks.remote.target import Target
from tasks.report import Progress, Report, human_size

CHUNK = 1 << 20


@dataclass(frozen=True)
class Found:
    """An image as its source has it: its ID, its size and its layers' digests (JSON)."""

    id: str
    size: int
    layers: str


class ImageSource(Protocol):
    """Where shipped images come from."""

    name: str

    def find(self, ref: str) -> Found | None:
        """The image ``ref``, or None when the source lacks it."""

    def save(self, ref: str) -> AbstractContextManager[BinaryIO]:
        """``docker save`` of ``ref``, as a byte stream."""


def parse_found(output: str) -> Found | None:
    """``<id> <size> <layers>`` as ``docker image inspect`` prints it, or None (pure)."""
    image_id, size, layers = [*output.strip().split(" ", 2), "", ""][:3]
    if not image_id.startswith("sha256:") or not size.isdigit() or not layers.startswith("["):
        return None
    return Found(image_id, int(size), layers)


class LocalDocker:
    """This machine's Docker engine: the ``docker`` command on PATH."""

    name = "this machine's Docker"

    def __init__(self) -> None:
        docker = shutil.which("docker")
        if docker is None:
            raise RegkitError(
                "--ship-images: no docker command on this machine; install Docker here, "
                "or ship from a host that has the images with --images-from HOST"
            )
        self.docker = docker

    def find(self, ref: str) -> Found | None:
        inspect = [self.docker, "image", "inspect", "--format", commands.IMAGE_FOUND, ref]
        result = subprocess.run(inspect, capture_output=True, text=True, check=False)
        return parse_found(result.stdout) if result.returncode == 0 else None

    @contextmanager
    def save(self, ref: str) -> Iterator[BinaryIO]:
        """``docker save`` here; when the other end fails first, its error is the one
        raised (this side then only dies of a broken pipe)."""
        save = subprocess.Popen(
            [self.docker, "save", ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert save.stdout is not None and save.stderr is not None
        try:
            yield save.stdout
        except BaseException:
            save.kill()
            save.wait()
            raise
        finally:
            save.stdout.close()
        err = save.stderr.read().decode(errors="replace").strip()
        if save.wait() != 0:
            raise RegkitError(f"docker save {ref} failed here: {err or 'no output'}")


class HostDocker:
    """Another inventory host's Docker engine (``--images-from HOST``)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.name = f"{target.alias}'s Docker"

    def find(self, ref: str) -> Found | None:
        result = self.target.run(commands.image_found(ref), what=f"looking for {ref}")
        return parse_found(result.stdout) if result.ok else None

    def save(self, ref: str) -> AbstractContextManager[BinaryIO]:
        return self.target.reading(commands.image_save(ref), f"docker save {ref}")


def require(source: ImageSource, alias: str, refs: tuple[str, ...]) -> dict[str, Found]:
    """Each of ``refs`` as the source has it; an error naming the first it lacks."""
    found = {}
    for ref in refs:
        image = source.find(ref)
        if image is None:
            raise RemoteError(
                f"{alias}: {ref} is missing on the host, and {source.name} does not have it "
                f"either; pull it there first ('docker pull {ref}'), or ship from a host "
                "that has it with --images-from HOST"
            )
        found[ref] = image
    return found


def ship(target: Target, source: ImageSource, ref: str, image: Found, report: Report) -> str:
    """Stream ``ref`` from ``source`` into the host's Docker and check its layers there
    (an image that arrived otherwise is removed again: the next run ships it anew);
    return what the report says of it."""
    start = time.monotonic()
    progress = Progress(report, target.alias, image.size, f"image {ref}")
    with (
        source.save(ref) as stream,
        target.writing(commands.image_load(), f"loading {ref}") as sink,
    ):
        while chunk := stream.read(CHUNK):
            sink.write(chunk)
            progress.add(len(chunk))
    found = target.check(commands.image_found(ref), f"reading {ref}").stdout
    arrived = parse_found(found)
    if arrived is None or arrived.layers != image.layers:
        target.run(commands.join("docker", "rmi", ref), what=f"removing {ref}")
        raise RemoteError(
            f"{target.alias}: {ref} arrived with other layers than {source.name} has; it "
            "was removed again: deploy again to ship it anew"
        )
    took = time.monotonic() - start
    return (
        f"shipped from {source.name} over SSH: {human_size(progress.done)} in {took:.1f} s, "
        f"its {layer_count(image)} layers as there"
    )


def layer_count(image: Found) -> int:
    return image.layers.count("sha256:")
