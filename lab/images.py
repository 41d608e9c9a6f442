"""The lab's images: what each is made of, its content hash, and how it is built.

Every image but ``b2d`` starts from a debootstrap root file system of its
``packages`` file, finished by the Dockerfile in ``lab/images/<name>``; ``b2d`` is
built FROM ``host``. A Dockerfile sees its own folder and, under ``common/``, the
files of ``lab/images/common`` its spec names: exactly what the image's hash covers.
Each is tagged with a hash of everything it is made from, so a second build makes
nothing.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab.engine import Engine
from lab.settings import COMMON_DIR, IMAGES_DIR, LABEL, PREFIX, LabError, Settings
from tasks.report import Report


@dataclass(frozen=True)
class ImageSpec:
    """One image, built from ``lab/images/<name>``.

    With ``base`` it is built FROM another lab image; otherwise FROM a debootstrap
    root file system of its ``packages`` file. ``version_of`` names the Debian
    package whose upstream version tags the image (``regkit-lab/nginx:1.22.1``);
    ``serves`` is the inventory's name for it (``registry.images.<serves>``);
    ``common`` the files of ``lab/images/common`` its Dockerfile copies.

    For the images lab hosts boot: ``disks``, what the host keeps on named volumes
    (what survives its reboot), and ``runtime``, the container engine it runs
    (``docker``, ``containerd`` or ``podman``).
    """

    name: str
    base: str | None = None
    version_of: str | None = None
    serves: str | None = None
    common: tuple[str, ...] = ()
    disks: tuple[str, ...] = ()
    runtime: str = ""

    @property
    def folder(self) -> Path:
        return IMAGES_DIR / self.name

    @property
    def context(self) -> list[tuple[str, Path]]:
        """The build context: each file's name in it, and where it is here."""
        own = sorted(p for p in self.folder.rglob("*") if p.is_file())
        return [(str(p.relative_to(self.folder)), p) for p in own] + [
            (f"common/{name}", COMMON_DIR / name) for name in self.common
        ]

    @property
    def packages(self) -> list[str]:
        lines = (self.folder / "packages").read_text().split()
        return sorted(line for line in lines if line)


HOST_FILES = ("boot", "login-user", "sshd_config")
IMAGES = (
    ImageSpec(
        "host",
        common=(*HOST_FILES, "init.d-containerd"),
        disks=("/var/lib/docker",),
        runtime="docker",
    ),
    ImageSpec(
        "b2d", base="host", disks=("/var/lib/boot2docker", "/var/lib/docker"), runtime="docker"
    ),
    ImageSpec(
        "node",
        common=(*HOST_FILES, "init.d-containerd"),
        disks=("/var/lib/containerd",),
        runtime="containerd",
    ),
    ImageSpec("pod", common=HOST_FILES, disks=("/var/lib/containers",), runtime="podman"),
    ImageSpec("store", common=HOST_FILES, disks=("/var/lib/ceph",), runtime="s3"),
    ImageSpec("registry", version_of="docker-registry", serves="registry"),
    # registry:3's layout, for the test that a deploy names its config (built on demand).
    ImageSpec("registry3", base="registry"),
    ImageSpec("nginx", version_of="nginx", serves="nginx"),
    ImageSpec("python", version_of="python3", serves="token"),
)


def image_spec(name: str) -> ImageSpec:
    """The lab image called ``name``."""
    return next(spec for spec in IMAGES if spec.name == name)


def needed_images(booted: Collection[str]) -> tuple[ImageSpec, ...]:
    """The images to build for hosts that boot the images named ``booted``: those, their
    bases, and every image served to the registry host (so a lab without store never
    builds Ceph's)."""
    names = set(booted)
    for spec in reversed(IMAGES):
        if spec.name in names and spec.base:
            names.add(spec.base)
    return tuple(spec for spec in IMAGES if spec.name in names or spec.serves)


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()[:16]


def rootfs_hash(spec: ImageSpec, settings: Settings) -> str:
    """What a debootstrap root file system is made of: suite, mirror and packages."""
    return _digest("debootstrap", "minbase", settings.suite, settings.mirror, *spec.packages)


def image_hash(spec: ImageSpec, settings: Settings) -> str:
    """What an image is made of: its base's hash and every file of its build context."""
    base = image_hash(image_spec(spec.base), settings) if spec.base else rootfs_hash(spec, settings)
    parts: list[str | bytes] = [base]
    for name, path in spec.context:
        parts += [name, path.read_bytes()]
    return _digest(*parts)


def context_tar(spec: ImageSpec) -> bytes:
    """The build context as a tar: the files the hash covers, 0644 and root's, dated 0."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, path in spec.context:
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def rootfs_ref(spec: ImageSpec, settings: Settings) -> str:
    return f"{PREFIX}/rootfs-{spec.name}:{rootfs_hash(spec, settings)}"


def image_ref(spec: ImageSpec, settings: Settings) -> str:
    return f"{PREFIX}/{spec.name}:{image_hash(spec, settings)}"


@contextmanager
def timed(report: Report, host: str, what: str) -> Iterator[Callable[[], float]]:
    """Print a start line for a long step; yield a clock for its done line."""
    report.info(f"[{host}] {what} ...")
    start = time.monotonic()
    yield lambda: time.monotonic() - start


def _debootstrap(spec: ImageSpec, settings: Settings, engine: Engine, report: Report) -> None:
    """Make the root file system of ``spec.packages`` and import it as an image."""
    root = Path(settings.root)
    target = root / "build" / f"{spec.name}-{rootfs_hash(spec, settings)}"
    cache = root / "debs" / spec.name
    log_path = root / "logs" / f"debootstrap-{spec.name}.log"
    for d in (cache, log_path.parent):
        d.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(spec.packages)}",
        f"--cache-dir={cache}",
        settings.suite,
        str(target),
        settings.mirror,
    ]
    ref = rootfs_ref(spec, settings)
    what = f"rootfs {ref}: debootstrap {settings.suite} + {', '.join(spec.packages)}"
    with timed(report, "lab", what) as took:
        try:
            with log_path.open("wb") as log:
                done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
            if done.returncode != 0:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise LabError(
                    f"debootstrap of {spec.name} failed ({' / '.join(tail)}); full log: {log_path}"
                )
            _import_rootfs(target, ref, engine)
        finally:
            shutil.rmtree(target, ignore_errors=True)
        report.changed("lab", f"rootfs {ref}", f"debootstrap and import took {took():.0f} s")


def _import_rootfs(target: Path, ref: str, engine: Engine) -> None:
    """``tar | docker import`` a root file system, without apt's downloaded files."""
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (target / leftover).glob("*"):
            if item.is_file():
                item.unlink()
    tar = subprocess.Popen(
        ["tar", "-C", str(target), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
    )
    imported = subprocess.run(
        engine.cmd("import", "-", ref), stdin=tar.stdout, capture_output=True, check=False
    )
    tar.wait()
    if imported.returncode != 0 or tar.returncode != 0:
        raise LabError(f"docker import of {ref} failed: {imported.stderr.decode().strip()}")


def _upstream_version(engine: Engine, base: str, package: str) -> str:
    """The upstream part of ``package``'s version in image ``base`` (2.8.2+ds1-1 -> 2.8.2)."""
    out = engine.run(
        "run",
        "--rm",
        "--network=none",
        "--entrypoint=dpkg-query",
        base,
        "--show",
        "--showformat=${Version}",
        package,
    ).stdout
    return out.split(":")[-1].split("+")[0].split("-")[0]


def version_ref(spec: ImageSpec, engine: Engine, settings: Settings) -> str | None:
    """The pinned reference the inventory names (``regkit-lab/registry:2.8.2``), if any."""
    if not spec.version_of:
        return None
    out = engine.run(
        "image",
        "inspect",
        "--format",
        f'{{{{index .Config.Labels "{LABEL}.version"}}}}',
        image_ref(spec, settings),
    )
    return f"{PREFIX}/{spec.name}:{out.stdout.strip()}"


def build_images(
    settings: Settings, engine: Engine, report: Report, images: tuple[ImageSpec, ...]
) -> None:
    """Build each of ``images`` whose content hash has no image yet (bases first), and
    say which were cached."""
    missing_rootfs = [
        spec
        for spec in images
        if not spec.base
        and not engine.image_id(image_ref(spec, settings))
        and not engine.image_id(rootfs_ref(spec, settings))
    ]
    if missing_rootfs:
        with ThreadPoolExecutor(max_workers=len(missing_rootfs)) as pool:
            for future in [
                pool.submit(_debootstrap, s, settings, engine, report) for s in missing_rootfs
            ]:
                future.result()
    for spec in images:
        ref = image_ref(spec, settings)
        if engine.image_id(ref):
            report.unchanged(
                "lab",
                f"image {PREFIX}/{spec.name}",
                f"cached, content hash {ref.rsplit(':', 1)[1]}",
            )
        else:
            base = (
                image_ref(image_spec(spec.base), settings)
                if spec.base
                else rootfs_ref(spec, settings)
            )
            args = ["build", "--network=none", "--build-arg", f"BASE={base}", "--tag", ref]
            if spec.version_of:
                version = _upstream_version(engine, base, spec.version_of)
                args += ["--label", f"{LABEL}.version={version}"]
            with timed(report, "lab", f"image {ref}: docker build FROM {base}") as took:
                engine.run(*args, "-", stdin=context_tar(spec))
                report.changed(
                    "lab",
                    f"image {PREFIX}/{spec.name}",
                    f"built in {took():.0f} s, content hash {ref.rsplit(':', 1)[1]}",
                )
        pinned = version_ref(spec, engine, settings)
        if pinned and engine.image_id(pinned) != engine.image_id(ref):
            engine.run("tag", ref, pinned)
            report.changed("lab", f"tag {pinned}", f"now names {ref}")
