"""The lab's hosts: which there are, and their containers: run, booted, given images, rebooted."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, get_args

from lab.engine import Engine
from lab.images import IMAGES, image_ref, image_spec, timed, version_ref
from lab.settings import BOOT_TIMEOUT, BOOTED, DOMAIN, LABEL, NETWORK, PREFIX, LabError, Settings
from lab.store import S3_PROBE
from tasks.inventory import Role
from tasks.report import Report


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
        """Named volumes and where they are mounted: the disk that survives reboots
        (``regkit-lab-node1-containerd`` on /var/lib/containerd), as its image says."""
        return {
            f"{PREFIX}-{self.alias}-{PurePosixPath(disk).name}": disk
            for disk in image_spec(self.image).disks
        }

    @property
    def runtime(self) -> str:
        """The container engine the host runs (docker, containerd or podman), or the
        service it is (s3)."""
        return image_spec(self.image).runtime

    @property
    def in_inventory(self) -> bool:
        """Whether regkit manages the host: only registry hosts and clients are in
        lab/inventory.yaml (store is a service regkit uses, never a target)."""
        return self.role in get_args(Role)

    @property
    def up_flag(self) -> str:
        """The ``lab.up`` flag that starts the host ("" for the hosts it always starts)."""
        if self in SCALE_OUT:
            return "--scale-out"
        return "--all" if self in OPTIONAL else ""


# Started by `lab.up --scale-out` (and --all): what a registry outgrowing one host
# needs. store is the team's S3 service, not a host regkit manages: its role keeps it
# out of the inventory. regbox2 is a second registry host: registry.lab.test names it
# too (one network alias on both), so a client's dialer fails over between them.
SCALE_OUT = (
    HostSpec("store", "store", "admin", "store", "debian"),
    HostSpec("regbox2", "host", "admin", "registry", "debian"),
)
# Started only by `lab.up --all`: hosts that run another container engine than
# Docker, and the scale-out hosts.
OPTIONAL = (
    HostSpec("node1", "node", "admin", "client", "debian"),
    HostSpec("pod1", "pod", "admin", "client", "debian"),
    *SCALE_OUT,
)


def lab_hosts(
    clients: int = 2, optional: bool = False, scale_out: bool = False
) -> tuple[HostSpec, ...]:
    """regbox, ``clients`` Debian clients (client1, client2, ...) and b2d; with
    ``optional``, every optional host too (node1, pod1, store, regbox2); with
    ``scale_out``, the scale-out hosts (store, regbox2)."""
    extra = OPTIONAL if optional else SCALE_OUT if scale_out else ()
    return (
        HostSpec("regbox", "host", "admin", "registry", "debian"),
        *(
            HostSpec(f"client{i}", "host", "admin", "client", "debian")
            for i in range(1, clients + 1)
        ),
        HostSpec("b2d", "b2d", "docker", "client", "boot2docker"),
        *extra,
    )


def kept_optional(specs: tuple[HostSpec, ...], running: Collection[str]) -> tuple[HostSpec, ...]:
    """The optional hosts whose containers are ``running`` but ``specs`` leaves out:
    a plain ``lab.up`` leaves them as they are, and lists them in the inventory."""
    named = {spec.alias for spec in specs}
    return tuple(h for h in OPTIONAL if h.alias not in named and h.container in running)


HOSTS = lab_hosts()
# How lab.status asks a host's container engine (or store's S3 gateway) for its
# version (as root, inside the host); the answer is empty when it does not answer.
# podman has no daemon.
RUNTIME_VERSION = {
    "docker": "docker version --format '{{.Server.Version}}'",
    "containerd": "ctr version | sed -n '/^Server:/,$ s/^ *Version: *//p'",
    "podman": "podman version --format '{{.Client.Version}}'",
    "s3": S3_PROBE,
}
CLIENT = re.compile(r"client([1-9][0-9]*)")
# Flags that let a host container run its own sshd and dockerd without --privileged
# (which fails where CAP_SYS_RESOURCE is not granted): full capabilities but
# CAP_SYS_RESOURCE, the cgroup tree bound in, a tmpfs /run (and, from HostSpec.volumes,
# the engine's data on a volume, off the container's overlay root).
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
    for spec in lab_hosts(int(extra.group(1)) if extra else 0, optional=True):
        if spec.alias == alias:
            return spec
    known = ", ".join(h.alias for h in HOSTS)
    engines = ", ".join(h.alias for h in OPTIONAL if h not in SCALE_OUT)
    scale_out = ", ".join(h.alias for h in SCALE_OUT)
    raise LabError(
        f"{alias!r} is not a lab host; the lab's hosts are {known} (and client3, client4, "
        f"... with --clients; {engines} with --all; {scale_out} with --scale-out or --all)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ssh_port(info: dict[str, Any]) -> int | None:
    """The loopback port a host container publishes its sshd on."""
    bindings = (info.get("HostConfig", {}).get("PortBindings") or {}).get("22/tcp") or []
    return int(bindings[0]["HostPort"]) if bindings else None


def published_port(engine: Engine, spec: HostSpec) -> int:
    """The ssh port of the host container ``spec``, or an error saying how to start it."""
    info = engine.inspect(spec.container)
    port = ssh_port(info) if info else None
    if info is None or port is None:
        up = f"invoke lab.up {spec.up_flag}".rstrip()
        raise LabError(f"{spec.alias} is not running; start the lab with `{up}`")
    return port


def ssh_answers(port: int, timeout: float = 2.0) -> bool:
    """True when an SSH server greets on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def ensure_network(engine: Engine, report: Report) -> None:
    if engine.ok("network", "inspect", NETWORK):
        report.unchanged("lab", f"network {NETWORK}", "exists")
        return
    engine.run("network", "create", "--label", LABEL, NETWORK)
    report.changed("lab", f"network {NETWORK}", "created")


def _run_host(engine: Engine, spec: HostSpec, settings: Settings, port: int) -> None:
    ref = image_ref(image_spec(spec.image), settings)
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


def ensure_host(engine: Engine, spec: HostSpec, settings: Settings, report: Report) -> int:
    """Start the host container if it is not running its current image; return its ssh port."""
    ref = image_ref(image_spec(spec.image), settings)
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
        report.unchanged(spec.alias, "host", f"running {ref}, ssh on 127.0.0.1:{port}")
        return port
    took = wait_booted(engine, spec, port)
    report.changed(spec.alias, "host", f"{why}, booted in {took:.0f} s, ssh on 127.0.0.1:{port}")
    return port


def load_images(engine: Engine, spec: HostSpec, settings: Settings, report: Report) -> None:
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
            report.unchanged(spec.alias, f"image {pinned}", "present in the host's engine")
            continue
        with timed(report, spec.alias, f"image {pinned}: docker save | docker load") as took:
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
            report.changed(
                spec.alias, f"image {pinned}", f"loaded into the host's engine in {took():.0f} s"
            )


def running_containers(engine: Engine) -> set[str]:
    """Names of the lab's running containers."""
    out = engine.run("ps", "--filter", f"label={LABEL}", "--format", "{{.Names}}")
    return set(out.stdout.split())


def present_clients(engine: Engine) -> int:
    """The highest N of the lab's clientN containers (0 if none)."""
    names = [name.removeprefix(f"{PREFIX}-") for name in engine.labelled("container")]
    found = [CLIENT.fullmatch(name) for name in names]
    return max((int(m.group(1)) for m in found if m), default=0)


def remove_host(
    engine: Engine,
    spec: HostSpec,
    report: Report,
    why: str = "removed (more clients than --clients asks for)",
) -> None:
    engine.run("rm", "--force", "--volumes", spec.container)
    for volume in spec.volumes:
        engine.run("volume", "rm", volume, check=False)
    report.changed(spec.alias, "host", why)


def reboot_host(engine: Engine, spec: HostSpec, settings: Settings, report: Report) -> None:
    """Reboot ``spec`` as its real machine would (see the ``reboot`` task)."""
    port = published_port(engine, spec)
    if spec.flavor == "boot2docker":
        engine.run("rm", "--force", spec.container)
        _run_host(engine, spec, settings, port)
        why = f"recreated from its image, kept {' and '.join(spec.volumes.values())}"
    else:
        engine.run("restart", spec.container, timeout=120)
        why = "restarted, disk kept"
    took = wait_booted(engine, spec, port)
    report.changed(spec.alias, "reboot", f"{why}; booted in {took:.0f} s")
