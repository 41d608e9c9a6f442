"""The lab: real Docker hosts on this machine, for the demo and the tests.

``lab.up`` starts a Docker engine for the lab if none answers on the lab's socket,
builds the lab's images from Debian packages (debootstrap, then the Dockerfiles in
``lab/images``), starts four hosts in containers (``regbox``, ``client1``,
``client2`` and the boot2docker-like ``b2d``) and writes ``lab/inventory.yaml``.
Images are tagged with a hash of everything they are made from, so a second run
builds nothing. See lab/README.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from invoke import Collection, Context

from tasks import inventory as inventory_module
from tasks.cli import task
from tasks.errors import RegkitError
from tasks.remote import open_target
from tasks.report import FAILED, Report
from tasks.state import atomic_write, ensure_private_dir

LAB_DIR = Path(__file__).resolve().parent.parent / "lab"
IMAGES_DIR = LAB_DIR / "images"
INVENTORY = LAB_DIR / "inventory.yaml"
STATE_DIR = LAB_DIR / "state"
SSH_KEY = STATE_DIR / "ssh" / "id_ed25519"

DOCKER_CLI = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
PREFIX = "regkit-lab"
LABEL = "org.regkit.lab"
NETWORK = PREFIX
DOMAIN = "registry.lab.test"
BOOTED = "/run/regkit-lab.booted"
BOOT_TIMEOUT = 120.0


class LabError(RegkitError):
    """The lab cannot be built, started or reached."""


@dataclass(frozen=True)
class Settings:
    """Where the lab keeps its engine and images, and where packages come from."""

    root: str = "/var/lib/regkit-lab"
    run_dir: str = "/run/regkit-lab"
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"

    @classmethod
    def from_context(cls, c: Context) -> Settings:
        return cls(**{k: str(v) for k, v in c.config.lab.items()})

    @property
    def socket(self) -> str:
        return f"unix://{self.run_dir}/docker.sock"


@dataclass(frozen=True)
class ImageSpec:
    """One image, built from ``lab/images/<name>``.

    With ``base`` it is built FROM another lab image; otherwise FROM a debootstrap
    root file system of its ``packages`` file. ``version_of`` names the Debian
    package whose upstream version tags the image (``regkit-lab/nginx:1.22.1``).
    """

    name: str
    base: str | None = None
    version_of: str | None = None

    @property
    def folder(self) -> Path:
        return IMAGES_DIR / self.name

    @property
    def packages(self) -> list[str]:
        lines = (self.folder / "packages").read_text().split()
        return sorted(line for line in lines if line)


@dataclass(frozen=True)
class HostSpec:
    """One lab host: the image it boots and how the inventory describes it."""

    alias: str
    image: str
    user: str
    role: str
    flavor: str

    @property
    def container(self) -> str:
        return f"{PREFIX}-{self.alias}"

    @property
    def volumes(self) -> dict[str, str]:
        """Named volumes and where they are mounted: the disk that survives reboots."""
        vols = {f"{PREFIX}-{self.alias}-docker": "/var/lib/docker"}
        if self.flavor == "boot2docker":
            vols[f"{PREFIX}-{self.alias}-boot2docker"] = "/var/lib/boot2docker"
        return vols


IMAGES = (
    ImageSpec("host"),
    ImageSpec("b2d", base="host"),
    ImageSpec("registry", version_of="docker-registry"),
    ImageSpec("nginx", version_of="nginx"),
)


def lab_hosts(clients: int = 2) -> tuple[HostSpec, ...]:
    """regbox, ``clients`` Debian clients (client1, client2, ...) and b2d."""
    return (
        HostSpec("regbox", "host", "admin", "registry", "debian"),
        *(
            HostSpec(f"client{i}", "host", "admin", "client", "debian")
            for i in range(1, clients + 1)
        ),
        HostSpec("b2d", "b2d", "docker", "client", "boot2docker"),
    )


HOSTS = lab_hosts()
CLIENT = re.compile(r"client([1-9][0-9]*)")
# Flags that let a host container run its own sshd and dockerd without --privileged
# (which fails where CAP_SYS_RESOURCE is not granted): full capabilities but
# CAP_SYS_RESOURCE, the cgroup tree bound in, a tmpfs /run, /var/lib/docker on a volume.
HOST_FLAGS = (
    "--cap-add=ALL",
    "--cap-drop=SYS_RESOURCE",
    "--security-opt=seccomp=unconfined",
    "--security-opt=apparmor=unconfined",
    "--security-opt=systempaths=unconfined",
    "--device-cgroup-rule=a *:* rwm",
    "--cgroupns=host",
    "--volume=/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs=/run",
    "--init",
    "--stop-timeout=30",
)


def host_spec(alias: str) -> HostSpec:
    """The lab host called ``alias``, or an error listing the lab's hosts."""
    extra = CLIENT.fullmatch(alias)
    for spec in lab_hosts(int(extra.group(1)) if extra else 0):
        if spec.alias == alias:
            return spec
    known = ", ".join(h.alias for h in HOSTS) + " (and client3, client4, ... with --clients)"
    raise LabError(f"{alias!r} is not a lab host; the lab's hosts are {known}")


def _image(name: str) -> ImageSpec:
    return next(spec for spec in IMAGES if spec.name == name)


class Engine:
    """The lab's Docker engine, driven with Debian's docker CLI (same version as dockerd)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if not os.access(DOCKER_CLI, os.X_OK):
            raise LabError(
                f"{DOCKER_CLI} not found; install Debian's docker.io (apt-get install docker.io)"
            )

    def cmd(self, *args: str) -> list[str]:
        return [DOCKER_CLI, "--host", self.settings.socket, *args]

    def run(
        self, *args: str, stdin: str | bytes | None = None, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run a docker command; raise LabError with its stderr when it fails and ``check``."""
        data = stdin.encode() if isinstance(stdin, str) else stdin
        proc = subprocess.run(
            self.cmd(*args),
            input=data,
            capture_output=True,
            timeout=timeout,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
            check=False,
        )
        out = subprocess.CompletedProcess(
            proc.args,
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        if check and out.returncode != 0:
            what = " ".join(args[:3])
            raise LabError(f"docker {what} failed: {out.stderr.strip() or out.stdout.strip()}")
        return out

    def ok(self, *args: str, timeout: float = 60) -> bool:
        return self.run(*args, check=False, timeout=timeout).returncode == 0

    def answers(self) -> bool:
        try:
            return self.ok("version", "--format", "{{.Server.Version}}", timeout=10)
        except subprocess.TimeoutExpired:
            return False

    def exec(
        self, container: str, script: str, stdin: str | bytes | None = None, check: bool = True
    ) -> str:
        """Run ``sh -c script`` as root in ``container``; return its output."""
        flags = ["-i"] if stdin is not None else []
        return self.run(
            "exec", *flags, container, "sh", "-c", script, stdin=stdin, check=check
        ).stdout

    def image_id(self, ref: str) -> str | None:
        out = self.run("image", "inspect", "--format", "{{.Id}}", ref, check=False)
        return out.stdout.strip() if out.returncode == 0 else None

    def inspect(self, container: str) -> dict[str, Any] | None:
        out = self.run("container", "inspect", container, check=False)
        return json.loads(out.stdout)[0] if out.returncode == 0 else None

    def labelled(self, kind: str) -> list[str]:
        """Names of the lab's containers, volumes or networks (by the lab's label)."""
        fmt = "{{.Names}}" if kind == "container" else "{{.Name}}"
        args = [kind, "ls", "--filter", f"label={LABEL}", "--format", fmt]
        if kind == "container":
            args.insert(2, "--all")
        return sorted(self.run(*args).stdout.split())


def ensure_engine(settings: Settings, rep: Report) -> Engine:
    """Use the lab's engine if it answers; otherwise start Debian's dockerd for it."""
    engine = Engine(settings)
    if engine.answers():
        rep.unchanged("lab", "docker engine", f"answers on {settings.socket}")
        return engine
    if not os.access(DOCKERD, os.X_OK):
        raise LabError(
            f"{DOCKERD} not found; install Debian's docker.io (apt-get install docker.io)"
        )
    root, run_dir = Path(settings.root), Path(settings.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = root / "dockerd.log"
    argv = [
        DOCKERD,
        f"--data-root={root / 'docker'}",
        f"--exec-root={run_dir / 'exec'}",
        f"--pidfile={run_dir / 'docker.pid'}",
        f"--host={settings.socket}",
    ]
    with log_path.open("ab") as log:
        subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while not engine.answers():
        if time.monotonic() > deadline:
            raise LabError(
                f"dockerd did not answer on {settings.socket} within 60 s; see {log_path}"
            )
        time.sleep(0.5)
    rep.changed(
        "lab", "docker engine", f"started dockerd on {settings.socket}, data in {root / 'docker'}"
    )
    return engine


# --- images -----------------------------------------------------------------------------


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
    """What an image is made of: its base's hash and every file in its folder."""
    base = image_hash(_image(spec.base), settings) if spec.base else rootfs_hash(spec, settings)
    parts: list[str | bytes] = [base]
    for path in sorted(p for p in spec.folder.rglob("*") if p.is_file()):
        parts += [str(path.relative_to(spec.folder)), path.read_bytes()]
    return _digest(*parts)


def rootfs_ref(spec: ImageSpec, settings: Settings) -> str:
    return f"{PREFIX}/rootfs-{spec.name}:{rootfs_hash(spec, settings)}"


def image_ref(spec: ImageSpec, settings: Settings) -> str:
    return f"{PREFIX}/{spec.name}:{image_hash(spec, settings)}"


@contextmanager
def _timed(rep: Report, host: str, what: str) -> Iterator[Callable[[], float]]:
    """Print a start line for a long step; yield a clock for its done line."""
    rep.info(f"[{host}] {what} ...")
    start = time.monotonic()
    yield lambda: time.monotonic() - start


def _debootstrap(spec: ImageSpec, settings: Settings, engine: Engine, rep: Report) -> None:
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
    with _timed(rep, "lab", what) as took:
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
        rep.changed("lab", f"rootfs {ref}", f"debootstrap and import took {took():.0f} s")


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


def build_images(settings: Settings, engine: Engine, rep: Report) -> None:
    """Build every lab image whose content hash has no image yet, and say which were cached."""
    missing_rootfs = [
        spec
        for spec in IMAGES
        if not spec.base
        and not engine.image_id(image_ref(spec, settings))
        and not engine.image_id(rootfs_ref(spec, settings))
    ]
    if missing_rootfs:
        with ThreadPoolExecutor(max_workers=len(missing_rootfs)) as pool:
            for future in [
                pool.submit(_debootstrap, s, settings, engine, rep) for s in missing_rootfs
            ]:
                future.result()
    for spec in IMAGES:
        ref = image_ref(spec, settings)
        if engine.image_id(ref):
            rep.unchanged(
                "lab",
                f"image {PREFIX}/{spec.name}",
                f"cached, content hash {ref.rsplit(':', 1)[1]}",
            )
        else:
            base = (
                image_ref(_image(spec.base), settings) if spec.base else rootfs_ref(spec, settings)
            )
            args = ["build", "--network=none", "--build-arg", f"BASE={base}", "--tag", ref]
            if spec.version_of:
                version = _upstream_version(engine, base, spec.version_of)
                args += ["--label", f"{LABEL}.version={version}"]
            with _timed(rep, "lab", f"image {ref}: docker build FROM {base}") as took:
                engine.run(*args, str(spec.folder))
                rep.changed(
                    "lab",
                    f"image {PREFIX}/{spec.name}",
                    f"built in {took():.0f} s, content hash {ref.rsplit(':', 1)[1]}",
                )
        pinned = version_ref(spec, engine, settings)
        if pinned and engine.image_id(pinned) != engine.image_id(ref):
            engine.run("tag", ref, pinned)
            rep.changed("lab", f"tag {pinned}", f"now names {ref}")


# --- hosts ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ssh_port(info: dict[str, Any]) -> int | None:
    """The loopback port a host container publishes its sshd on."""
    bindings = (info.get("HostConfig", {}).get("PortBindings") or {}).get("22/tcp") or []
    return int(bindings[0]["HostPort"]) if bindings else None


def ssh_answers(port: int, timeout: float = 2.0) -> bool:
    """True when an SSH server greets on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def ensure_network(engine: Engine, rep: Report) -> None:
    if engine.ok("network", "inspect", NETWORK):
        rep.unchanged("lab", f"network {NETWORK}", "exists")
        return
    engine.run("network", "create", "--label", LABEL, NETWORK)
    rep.changed("lab", f"network {NETWORK}", "created")


def _run_host(engine: Engine, spec: HostSpec, settings: Settings, port: int) -> None:
    ref = image_ref(_image(spec.image), settings)
    args = ["run", "--detach", "--name", spec.container, "--hostname", spec.alias]
    args += ["--label", LABEL, "--label", f"{LABEL}.image={ref}", "--network", NETWORK]
    if spec.role == "registry":
        args += ["--network-alias", DOMAIN]
    args += ["--publish", f"127.0.0.1:{port}:22", *HOST_FLAGS]
    for volume, mount in spec.volumes.items():
        if not engine.ok("volume", "inspect", volume):
            engine.run("volume", "create", "--label", LABEL, volume)
        args += ["--volume", f"{volume}:{mount}"]
    engine.run(*args, ref)


def wait_booted(engine: Engine, spec: HostSpec, port: int) -> float:
    """Wait until the host's boot script has finished and its sshd greets; return seconds."""
    start = time.monotonic()
    while True:
        booted = engine.ok("exec", spec.container, "test", "-e", BOOTED, timeout=10)
        if booted and ssh_answers(port):
            return time.monotonic() - start
        info = engine.inspect(spec.container)
        if not info or not info["State"]["Running"] or time.monotonic() - start > BOOT_TIMEOUT:
            logs = engine.run("logs", "--tail", "5", spec.container, check=False)
            raise LabError(
                f"{spec.alias} did not boot (stopped, or not booted within {BOOT_TIMEOUT:.0f} s) "
                f"({(logs.stdout + logs.stderr).strip()}); "
                f"see `docker -H {engine.settings.socket} logs {spec.container}`"
            )
        time.sleep(0.5)


def ensure_host(engine: Engine, spec: HostSpec, settings: Settings, rep: Report) -> int:
    """Start the host container if it is not running its current image; return its ssh port."""
    ref = image_ref(_image(spec.image), settings)
    info = engine.inspect(spec.container)
    port = (ssh_port(info) if info else None) or _free_port()
    if info and info["Config"]["Labels"].get(f"{LABEL}.image") != ref:
        engine.run("rm", "--force", "--volumes", spec.container)
        for volume in spec.volumes:
            engine.run("volume", "rm", volume, check=False)
        why = "image changed: recreated with a fresh disk"
        info = None
    else:
        why = "created"
    if info is None:
        _run_host(engine, spec, settings, port)
    elif not info["State"]["Running"]:
        engine.run("start", spec.container)
        why = "was stopped: started"
    else:
        rep.unchanged(spec.alias, "host", f"running {ref}, ssh on 127.0.0.1:{port}")
        return port
    took = wait_booted(engine, spec, port)
    rep.changed(spec.alias, "host", f"{why}, booted in {took:.0f} s, ssh on 127.0.0.1:{port}")
    return port


def _userdata_tar(public_key: str) -> bytes:
    """A boot2docker userdata.tar holding .ssh/authorized_keys, as docker-machine makes it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ssh = tarfile.TarInfo(".ssh")
        ssh.type, ssh.mode = tarfile.DIRTYPE, 0o700
        tar.addfile(ssh)
        data = public_key.encode()
        keys = tarfile.TarInfo(".ssh/authorized_keys")
        keys.size, keys.mode = len(data), 0o600
        tar.addfile(keys, io.BytesIO(data))
    return buf.getvalue()


def authorize(engine: Engine, spec: HostSpec, public_key: str, rep: Report) -> None:
    """Let the lab's key log in as the host's user (b2d: through userdata.tar, kept on disk)."""
    home = f"/home/{spec.user}"
    current = engine.run("exec", spec.container, "cat", f"{home}/.ssh/authorized_keys", check=False)
    if current.stdout.strip() == public_key.strip():
        rep.unchanged(spec.alias, f"authorized_keys of {spec.user}", "holds the lab key")
        return
    if spec.flavor == "boot2docker":
        engine.exec(
            spec.container,
            "cat > /var/lib/boot2docker/userdata.tar",
            stdin=_userdata_tar(public_key),
        )
        engine.exec(spec.container, "/usr/local/sbin/b2d-userdata")
    else:
        user, ssh = shlex.quote(spec.user), shlex.quote(f"{home}/.ssh")
        script = (
            f"install -d -m 700 -o {user} -g {user} {ssh} && "
            f"cat > {ssh}/authorized_keys && "
            f"chown {user}:{user} {ssh}/authorized_keys && "
            f"chmod 600 {ssh}/authorized_keys"
        )
        engine.exec(spec.container, script, stdin=public_key)
    rep.changed(spec.alias, f"authorized_keys of {spec.user}", "lab key installed")


def host_key(engine: Engine, spec: HostSpec) -> str:
    """The host's ed25519 public host key, read from inside the container (not over the network)."""
    path = "/var/lib/boot2docker/ssh" if spec.flavor == "boot2docker" else "/etc/ssh"
    line = engine.run("exec", spec.container, "cat", f"{path}/ssh_host_ed25519_key.pub").stdout
    return " ".join(line.split()[:2])


def load_images(engine: Engine, spec: HostSpec, settings: Settings, rep: Report) -> None:
    """Put the registry and nginx images into the host's own engine, as a pull would."""
    for image in IMAGES:
        pinned = version_ref(image, engine, settings)
        if not pinned:
            continue
        want = engine.image_id(pinned)
        inner = engine.run(
            "exec",
            spec.container,
            "docker",
            "image",
            "inspect",
            "--format={{.Id}}",
            pinned,
            check=False,
        )
        if inner.stdout.strip() == want:
            rep.unchanged(spec.alias, f"image {pinned}", "present in the host's engine")
            continue
        with _timed(rep, spec.alias, f"image {pinned}: docker save | docker load") as took:
            save = subprocess.Popen(engine.cmd("save", pinned), stdout=subprocess.PIPE)
            load = subprocess.run(
                engine.cmd("exec", "-i", spec.container, "docker", "load", "--quiet"),
                stdin=save.stdout,
                capture_output=True,
                check=False,
            )
            save.wait()
            if load.returncode != 0 or save.returncode != 0:
                raise LabError(
                    f"loading {pinned} into {spec.alias} failed: {load.stderr.decode().strip()}"
                )
            rep.changed(
                spec.alias, f"image {pinned}", f"loaded into the host's engine in {took():.0f} s"
            )


def ensure_ssh_key(rep: Report) -> str:
    """The lab's login key (made once); return its public line."""
    if not SSH_KEY.exists():
        ensure_private_dir(SSH_KEY.parent)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "regkit-lab", "-f", str(SSH_KEY)],
            check=True,
        )
        rep.changed("lab", "ssh key", f"made {SSH_KEY.relative_to(LAB_DIR.parent)}")
    else:
        rep.unchanged("lab", "ssh key", f"{SSH_KEY.relative_to(LAB_DIR.parent)} exists")
    return SSH_KEY.with_suffix(".pub").read_text().strip()


def inventory_data(
    specs: tuple[HostSpec, ...], ports: dict[str, int], keys: dict[str, str], refs: dict[str, str]
) -> dict[str, Any]:
    """The lab's inventory, valid under tasks.inventory's schema."""
    hosts = {
        spec.alias: {
            "hostname": "127.0.0.1",
            "port": ports[spec.alias],
            "user": spec.user,
            "key_file": str(SSH_KEY.relative_to(LAB_DIR)),
            "host_key": keys[spec.alias],
            "sudo": True,
            "role": spec.role,
            "flavor": spec.flavor,
        }
        for spec in specs
    }
    return {
        "registry": {"domain": DOMAIN, "images": refs},
        "state_dir": "state/regkit",
        "hosts": hosts,
    }


def write_inventory(data: dict[str, Any], rep: Report) -> None:
    text = "# Written by `invoke lab.up`; removed by `invoke lab.down`.\n"
    text += yaml.safe_dump(data, sort_keys=False)
    if atomic_write(INVENTORY, text, mode=0o644):
        rep.changed("lab", "inventory", f"wrote {INVENTORY.relative_to(LAB_DIR.parent)}")
    else:
        rep.unchanged("lab", "inventory", f"{INVENTORY.relative_to(LAB_DIR.parent)} is current")


def _refs(engine: Engine, settings: Settings) -> dict[str, str]:
    refs = {spec.name: version_ref(spec, engine, settings) for spec in IMAGES if spec.version_of}
    return {name: ref for name, ref in refs.items() if ref}


def _finish(rep: Report) -> None:
    if rep.count(FAILED):
        rep.summary()
        raise LabError("the lab is not fully up; see the failed lines above")
    rep.summary()


def present_clients(engine: Engine) -> int:
    """The highest N of the lab's clientN containers (0 if none)."""
    names = [name.removeprefix(f"{PREFIX}-") for name in engine.labelled("container")]
    found = [CLIENT.fullmatch(name) for name in names]
    return max((int(m.group(1)) for m in found if m), default=0)


def remove_host(engine: Engine, spec: HostSpec, rep: Report) -> None:
    engine.run("rm", "--force", "--volumes", spec.container)
    for volume in spec.volumes:
        engine.run("volume", "rm", volume, check=False)
    rep.changed(spec.alias, "host", "removed (more clients than --clients asks for)")


@task(help={"clients": "How many Debian clients (client1..clientN) to run; 2 by default."})
def up(c: Context, clients: int = 2) -> None:
    """Build the lab's images (cached by content) and start its hosts.

    Starts Debian's dockerd for the lab if none answers on the lab's socket, builds
    what is missing, starts regbox, client1..clientN (two unless --clients says
    otherwise) and b2d, loads the registry and nginx images into regbox's engine
    and writes lab/inventory.yaml.
    """
    if clients < 1:
        raise LabError(f"--clients {clients}: the lab needs at least one client")
    settings = Settings.from_context(c)
    specs = lab_hosts(clients)
    rep = Report()
    start = time.monotonic()
    engine = ensure_engine(settings, rep)
    build_images(settings, engine, rep)
    public_key = ensure_ssh_key(rep)
    ensure_network(engine, rep)
    for extra in range(clients + 1, present_clients(engine) + 1):
        remove_host(engine, host_spec(f"client{extra}"), rep)
    ports: dict[str, int] = {}
    lock = threading.Lock()

    def bring_up(spec: HostSpec) -> None:
        port = ensure_host(engine, spec, settings, rep)
        with lock:
            ports[spec.alias] = port

    with ThreadPoolExecutor(max_workers=len(specs)) as pool:
        for future in [pool.submit(bring_up, spec) for spec in specs]:
            future.result()
    keys = {}
    for spec in specs:
        authorize(engine, spec, public_key, rep)
        keys[spec.alias] = host_key(engine, spec)
        if spec.role == "registry":
            load_images(engine, spec, settings, rep)
    write_inventory(inventory_data(specs, ports, keys, _refs(engine, settings)), rep)
    where = INVENTORY.relative_to(LAB_DIR.parent)
    rep.info(f"[lab] up in {time.monotonic() - start:.0f} s; use REGISTRY_INVENTORY={where}")
    _finish(rep)


@task
def down(c: Context) -> None:
    """Remove every container, volume and network of the lab, its inventory and keys.

    The images stay cached in the lab's engine (and the engine keeps running), so
    the next ``lab.up`` is fast; lab/state (keys, and PKI the deploy made for the
    lab) is removed with the inventory.
    """
    settings = Settings.from_context(c)
    rep = Report()
    engine = Engine(settings)
    if engine.answers():
        for name in engine.labelled("container"):
            engine.run("rm", "--force", "--volumes", name)
            rep.changed("lab", f"container {name}", "removed")
        for name in engine.labelled("volume"):
            engine.run("volume", "rm", name)
            rep.changed("lab", f"volume {name}", "removed")
        for name in engine.labelled("network"):
            engine.run("network", "rm", name)
            rep.changed("lab", f"network {name}", "removed")
        rep.info(f"[lab] images stay cached in the engine on {settings.socket}")
    else:
        rep.unchanged(
            "lab", "docker engine", f"nothing answers on {settings.socket}: no containers to remove"
        )
    if INVENTORY.exists():
        INVENTORY.unlink()
        rep.changed("lab", "inventory", f"removed {INVENTORY.relative_to(LAB_DIR.parent)}")
    if STATE_DIR.exists():
        shutil.rmtree(STATE_DIR)
        rep.changed(
            "lab", "state", f"removed {STATE_DIR.relative_to(LAB_DIR.parent)} (ssh key, lab PKI)"
        )
    _finish(rep)


@task
def status(c: Context) -> None:
    """Show each lab host: running or not, its ssh port, whether its docker answers."""
    settings = Settings.from_context(c)
    engine = Engine(settings)
    if not engine.answers():
        print(f"lab engine: not answering on {settings.socket} (run `invoke lab.up`)")
        return
    print(f"lab engine: answers on {settings.socket}")
    for spec in lab_hosts(max(2, present_clients(engine))):
        info = engine.inspect(spec.container)
        if info is None:
            print(f"  {spec.alias:<8} absent")
            continue
        if not info["State"]["Running"]:
            print(f"  {spec.alias:<8} stopped")
            continue
        port = ssh_port(info)
        ssh = f"ssh 127.0.0.1:{port} {'answers' if port and ssh_answers(port) else 'silent'}"
        version = engine.run(
            "exec", spec.container, "docker", "version", "--format={{.Server.Version}}", check=False
        ).stdout.strip()
        docker = f"docker {version} answers" if version else "docker not answering"
        print(f"  {spec.alias:<8} running, {ssh}, {docker}")


def reboot_host(engine: Engine, spec: HostSpec, settings: Settings, rep: Report) -> None:
    """Reboot ``spec`` as its real machine would (see the ``reboot`` task)."""
    info = engine.inspect(spec.container)
    port = ssh_port(info) if info else None
    if info is None or port is None:
        raise LabError(f"{spec.alias} is not running; start the lab with `invoke lab.up`")
    if spec.flavor == "boot2docker":
        engine.run("rm", "--force", spec.container)
        _run_host(engine, spec, settings, port)
        why = "recreated from its image, kept /var/lib/boot2docker and /var/lib/docker"
    else:
        engine.run("restart", spec.container, timeout=120)
        why = "restarted, disk kept"
    took = wait_booted(engine, spec, port)
    rep.changed(spec.alias, "reboot", f"{why}; booted in {took:.0f} s")


@task(help={"host": "the lab host to reboot: regbox, client1, client2 or b2d"})
def reboot(c: Context, host: str) -> None:
    """Reboot a lab host as the real machine would.

    A Docker host's container restarts with its whole disk; dockerd comes back
    through its init script, and its containers by their restart policies. b2d is
    recreated from its image keeping only /var/lib/boot2docker and /var/lib/docker,
    as boot2docker's root file system lives in RAM.
    """
    spec = host_spec(host)
    settings = Settings.from_context(c)
    rep = Report()
    engine = Engine(settings)
    if not engine.answers():
        raise LabError(
            f"the lab's engine does not answer on {settings.socket}; run `invoke lab.up`"
        )
    reboot_host(engine, spec, settings, rep)
    _finish(rep)


@task(
    name="run",
    help={
        "host": "the lab host: regbox, client1, client2 or b2d",
        "command": "a shell command, run as root over SSH (pinned host key)",
    },
)
def run_on(c: Context, host: str, command: str) -> None:
    """Run a shell command as root on a lab host over SSH, as an operator would."""
    host_spec(host)
    if not INVENTORY.exists():
        raise LabError(f"{INVENTORY} is missing; run `invoke lab.up` first")
    target = open_target(inventory_module.load(INVENTORY), host, c)
    result = target.run(command, stream=lambda line: print(f"[{host}] {line}", flush=True))
    if result.failed:
        raise LabError(f"{host}: the command exited {result.exited}")


ns = Collection("lab", up, down, status, reboot, run_on)
ns.configure({"lab": asdict(Settings())})
