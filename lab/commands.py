"""The invoke collection ``lab`` (``invoke lab.*``): up, down, status, reboot and run.

Not ``lab/tasks.py``: invoke looks for a ``tasks`` module from the working directory
upwards, so from inside ``lab/`` it would load that one instead of the repository's
``tasks/``.
"""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from invoke import Collection, Context

from lab import hub as lab_hub
from lab.access import authorize, ensure_ssh_key, host_key, inventory_data, write_inventory
from lab.engine import Engine, ensure_engine
from lab.hosts import (
    RUNTIME_VERSION,
    HostSpec,
    ensure_host,
    ensure_network,
    host_spec,
    kept_optional,
    lab_hosts,
    load_images,
    present_clients,
    published_port,
    reboot_host,
    remove_host,
    running_containers,
    ssh_answers,
    ssh_port,
)
from lab.images import IMAGES, build_images, needed_images, version_ref
from lab.settings import INVENTORY, LAB_DIR, S3_INVENTORY, STATE_DIR, LabError, Settings
from lab.store import write_s3_inventory, write_s3_state
from tasks import inventory as inventory_module
from tasks.cli import task
from tasks.remote.target import open_target
from tasks.report import FAILED, Report


def _refs(engine: Engine, settings: Settings) -> dict[str, str]:
    refs = {spec.serves: version_ref(spec, engine, settings) for spec in IMAGES if spec.serves}
    return {name: ref for name, ref in refs.items() if ref}


def _finish(report: Report) -> None:
    if report.count(FAILED):
        report.summary()
        raise LabError("the lab is not fully up; see the failed lines above")
    report.summary()


@task(
    help={
        "clients": "How many Debian clients (client1..clientN) to run; 2 by default.",
        "all_": "Also start the optional hosts: node1 (containerd), pod1 (podman), store (S3), "
        "regbox2.",
        "scale_out": "Also start the scale-out hosts: store (Ceph's S3 gateway), regbox2 (a "
        "second registry host).",
        "hub": "Also start hub, the lab's Docker Hub, and deploy a mirror of it (--all does).",
    }
)
def up(
    c: Context, clients: int = 2, all_: bool = False, scale_out: bool = False, hub: bool = False
) -> None:
    """Build the lab's images (cached by content) and start its hosts.

    Starts Debian's dockerd for the lab if none answers on the lab's socket, builds
    what is missing, starts regbox, client1..clientN (two unless --clients says
    otherwise) and b2d, with --scale-out store and regbox2, and with --all every
    optional host (node1, pod1, store, regbox2) and hub (also with --hub: the lab's
    Docker Hub, which the inventory's registry.mirror caches), loads the registry and nginx
    images into each registry host's engine and writes lab/inventory.yaml, and
    with store lab/state/s3.json (its S3 endpoint and keys, 0600). Optional hosts
    already running that the flags leave out are left as they are (and in the
    inventory, but for store, which never is).
    """
    if clients < 1:
        raise LabError(f"--clients {clients}: the lab needs at least one client")
    settings = Settings.from_context(c)
    specs = lab_hosts(clients, optional=all_, scale_out=scale_out)
    report = Report()
    start = time.monotonic()
    engine = ensure_engine(settings, report)
    build_images(settings, engine, report, needed_images({spec.image for spec in specs}))
    public_key = ensure_ssh_key(report)
    ensure_network(engine, report)
    for extra in range(clients + 1, present_clients(engine) + 1):
        remove_host(engine, host_spec(f"client{extra}"), report)
    kept = kept_optional(specs, running_containers(engine))
    ports: dict[str, int] = {}
    lock = threading.Lock()

    def bring_up(spec: HostSpec) -> None:
        port = ensure_host(engine, spec, settings, report)
        with lock:
            ports[spec.alias] = port

    with ThreadPoolExecutor(max_workers=len(specs)) as pool:
        for future in [pool.submit(bring_up, spec) for spec in specs]:
            future.result()
    for spec in kept:
        ports[spec.alias] = published_port(engine, spec)
        report.unchanged(
            spec.alias,
            "host",
            f"optional, running: left as it is; lab.up {spec.up_flag} updates it",
        )
    keys = {}
    for spec in specs + kept:
        authorize(engine, spec, public_key, report)
        if spec.in_inventory:
            keys[spec.alias] = host_key(engine, spec)
        if spec.role == "registry":
            load_images(engine, spec, settings, report)
        if spec.runtime == "s3":
            write_s3_state(engine, spec.container, report)
    mirror = None
    if all_ or hub or lab_hub.running(engine):
        lab_hub.ensure_hub(engine, settings, report)
        mirror = lab_hub.mirror_settings(engine)
    managed = tuple(spec for spec in specs + kept if spec.in_inventory)
    refs = _refs(engine, settings)
    write_inventory(inventory_data(managed, ports, keys, refs, mirror), report)
    where = INVENTORY.relative_to(LAB_DIR.parent)
    report.info(f"[lab] up in {time.monotonic() - start:.0f} s; use REGISTRY_INVENTORY={where}")
    _finish(report)


@task
def down(c: Context) -> None:
    """Remove every container, volume and network of the lab, its inventory and keys.

    The images stay cached in the lab's engine (and the engine keeps running), so
    the next ``lab.up`` is fast; lab/state (keys, and PKI the deploy made for the
    lab) is removed with the inventory.
    """
    settings = Settings.from_context(c)
    report = Report()
    engine = Engine(settings)
    if engine.answers():
        for name in engine.labelled("container"):
            engine.run("rm", "--force", "--volumes", name)
            report.changed("lab", f"container {name}", "removed")
        for name in engine.labelled("volume"):
            engine.run("volume", "rm", name)
            report.changed("lab", f"volume {name}", "removed")
        for name in engine.labelled("network"):
            engine.run("network", "rm", name)
            report.changed("lab", f"network {name}", "removed")
        report.info(f"[lab] images stay cached in the engine on {settings.socket}")
    else:
        report.unchanged(
            "lab", "docker engine", f"nothing answers on {settings.socket}: no containers to remove"
        )
    for path in (INVENTORY, S3_INVENTORY):
        if path.exists():
            path.unlink()
            report.changed("lab", "inventory", f"removed {path.relative_to(LAB_DIR.parent)}")
    if STATE_DIR.exists():
        shutil.rmtree(STATE_DIR)
        report.changed(
            "lab", "state", f"removed {STATE_DIR.relative_to(LAB_DIR.parent)} (ssh key, lab PKI)"
        )
    _finish(report)


@task
def status(c: Context) -> None:
    """Show each lab host: running or not, its ssh port, whether its container engine
    (docker; containerd on node1, podman on pod1) or store's S3 gateway answers; and
    whether hub, the lab's Docker Hub, answers."""
    settings = Settings.from_context(c)
    engine = Engine(settings)
    if not engine.answers():
        print(f"lab engine: not answering on {settings.socket} (run `invoke lab.up`)")
        return
    print(f"lab engine: answers on {settings.socket}")
    for spec in lab_hosts(max(2, present_clients(engine)), optional=True):
        info = engine.inspect(spec.container)
        if info is None:
            hint = f" (optional: lab.up {spec.up_flag} starts it)" if spec.up_flag else ""
            print(f"  {spec.alias:<8} absent{hint}")
            continue
        if not info["State"]["Running"]:
            print(f"  {spec.alias:<8} stopped")
            continue
        port = ssh_port(info)
        ssh = f"ssh 127.0.0.1:{port} {'answers' if port and ssh_answers(port) else 'silent'}"
        probe = RUNTIME_VERSION[spec.runtime]
        version = engine.exec(spec.container, probe, check=False).strip()
        answers = f"{version} answers" if version else "not answering"
        print(f"  {spec.alias:<8} running, {ssh}, {spec.runtime} {answers}")
    print(f"  {'hub':<8} {lab_hub.describe(engine)}")


@task(
    help={
        "host": "the lab host to reboot: regbox, client1, client2, b2d, node1, pod1, store, regbox2"
    }
)
def reboot(c: Context, host: str) -> None:
    """Reboot a lab host as the real machine would.

    A Docker host's container restarts with its whole disk; dockerd comes back
    through its init script, and its containers by their restart policies (node1:
    containerd through its init script; pod1 has no daemon; store: Ceph through
    its init script, its cluster kept on /var/lib/ceph, lab/state/s3.json
    rewritten should its address change). b2d is recreated from its image keeping
    only /var/lib/boot2docker and /var/lib/docker, as boot2docker's root file
    system lives in RAM.
    """
    spec = host_spec(host)
    settings = Settings.from_context(c)
    report = Report()
    engine = Engine(settings)
    if not engine.answers():
        raise LabError(
            f"the lab's engine does not answer on {settings.socket}; run `invoke lab.up`"
        )
    reboot_host(engine, spec, settings, report)
    if spec.runtime == "s3":
        write_s3_state(engine, spec.container, report)
    _finish(report)


@task(
    name="run",
    help={
        "host": "the lab host: regbox, client1, client2, b2d, node1, pod1 or regbox2",
        "command": "a shell command, run as root over SSH (pinned host key)",
    },
)
def run_on(c: Context, host: str, command: str) -> None:
    """Run a shell command as root on a lab host over SSH, as an operator would."""
    spec = host_spec(host)
    if not spec.in_inventory:
        raise LabError(
            f"{host} is not in the inventory (regkit never manages it); "
            f"use `docker -H {Settings.from_context(c).socket} exec {spec.container} ...`"
        )
    if not INVENTORY.exists():
        raise LabError(f"{INVENTORY} is missing; run `invoke lab.up` first")
    target = open_target(inventory_module.load(INVENTORY), host, c)
    result = target.run(command, stream=lambda line: print(f"[{host}] {line}", flush=True))
    if result.failed:
        raise LabError(f"{host}: the command exited {result.exited}")


@task(
    name="s3-inventory",
    help={
        "to": "where to write it (default lab/inventory-s3.yaml)",
        "root": "the registry's root directory in the bucket (default /regkit)",
        "https": "through the gateway's https endpoint, trusting the lab's S3 CA",
    },
)
def s3_inventory(c: Context, to: str = "", root: str = "/regkit", https: bool = False) -> None:
    """Write the lab inventory with the registry on store's S3 bucket, and store its keys."""
    report = Report()
    write_s3_inventory(Path(to) if to else S3_INVENTORY, root, https, report)
    _finish(report)


ns = Collection("lab", up, down, status, reboot, run_on, s3_inventory)
ns.configure({"lab": asdict(Settings())})
