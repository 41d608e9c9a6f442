"""Day two on the registry host: ``fab gc`` and ``fab rollback``.

Garbage collection follows distribution's rule: never while pushes can happen.
The registry runs read-only (pulls work, pushes get a clear read-only error)
while ``garbage-collect`` runs, after a dry run that says what would go.

Rollback returns the registry and the proxy to the images, and the registry to
the staged configuration, that the previous deploy ran
(``/etc/regkit/deployed.json``, see :mod:`tasks.plans.maintenance`); data and
users are untouched.
"""

from __future__ import annotations

import json
import re
from shlex import quote

from invoke import Collection, Context

from tasks import commands, inventory, storage, wanted
from tasks.cli import task
from tasks.inventory import Inventory
from tasks.layout import DEPLOYED, REGISTRY, REGISTRY_CONFIG
from tasks.plans import maintenance as planner
from tasks.plans.deploy_steps import replace_script, verify_script
from tasks.plans.maintenance import HostState
from tasks.remote.fanout import each_host, hosts_for
from tasks.remote.lock import host_lock
from tasks.remote.target import Target
from tasks.remote.upload import Upload
from tasks.report import Report

# The registry binary: "registry" in the official image, "docker-registry" in Debian's.
FIND_BINARY = "command -v registry || command -v docker-registry"


def read_state(target: Target) -> HostState:
    """What runs on the host, and its deploy record, in one command."""
    return planner.parse_facts(target.check(planner.facts_script(), "reading the host").stdout)


def set_readonly(inv: Inventory, target: Target, state: HostState, on: bool) -> None:
    """Recreate the registry with the read-only (or its normal) config, then reload nginx."""
    normal, readonly = planner.gc_configs(target.alias, state)
    spec = wanted.registry_spec(inv, readonly if on else normal, image=state.registry_image)
    mode = "read-only" if on else "read-write"
    target.check(replace_script(spec), f"restarting {REGISTRY} {mode}")
    target.check(commands.nginx_reload(), "reloading nginx")


def disk_use(inv: Inventory, target: Target) -> int:
    out = target.check(
        f"du -sk {quote(inv.registry.data_dir)} | cut -f1", "measuring disk use"
    ).stdout
    return int(out.strip() or 0)


def collect(target: Target, dry_run: bool, delete_untagged: bool) -> str:
    flags = [f for f, on in (("--dry-run", dry_run), ("--delete-untagged", delete_untagged)) if on]
    find = commands.join("docker", "exec", REGISTRY, "sh", "-c", FIND_BINARY)
    run = commands.join("docker", "exec", REGISTRY)
    garbage_collect = commands.join("garbage-collect", *flags, REGISTRY_CONFIG)
    return target.check(
        f'bin=$({find}) && {run} "$bin" {garbage_collect} 2>&1',
        "garbage-collect" + (" --dry-run" if dry_run else ""),
    ).stdout


def eligible(output: str) -> int:
    """How many blobs garbage-collect deletes (or would)."""
    return len(re.findall(r"blob eligible for deletion", output))


@task(
    role="registry",
    help={
        "dry-run": "Only say what would be deleted; the registry stays writable.",
        "delete-untagged": "Also delete manifests that no tag points to any more.",
        "force": "Act on -H hosts whose inventory role is not registry.",
    },
)
def gc(
    c: Context, dry_run: bool = False, delete_untagged: bool = False, force: bool = False
) -> None:
    """Collect garbage safely: dry run, then read-only registry while blobs are deleted."""
    inv = inventory.load()
    storage.one_writer(inv, "fab gc")
    report = Report()
    aliases = hosts_for(c, inv, "registry", "gc", force)

    def work(target: Target) -> None:
        with host_lock(target, "gc"):
            collect_garbage(inv, target, report, dry_run, delete_untagged)

    each_host(c, inv, aliases, report, "gc", work)


def collect_garbage(
    inv: Inventory, target: Target, report: Report, dry_run: bool, delete_untagged: bool
) -> int:
    """Dry run, then (unless ``dry_run``) collect with the registry read-only; KiB freed."""
    alias = target.alias
    state = read_state(target)
    planner.gc_configs(alias, state)
    before = disk_use(inv, target)
    planned = eligible(collect(target, dry_run=True, delete_untagged=delete_untagged))
    report.ok(
        alias, "gc dry run", f"{planned} blobs eligible for deletion, {before // 1024} MiB in use"
    )
    if dry_run or not planned:
        report.unchanged(alias, "gc", "dry run only" if dry_run else "nothing to delete")
        return 0
    report.info(f"[{alias}] registry read-only while collecting: pushes are refused, pulls work")
    try:
        set_readonly(inv, target, state, True)
        deleted = eligible(collect(target, dry_run=False, delete_untagged=delete_untagged))
    finally:
        set_readonly(inv, target, state, False)
    after = disk_use(inv, target)
    report.changed(
        alias,
        "gc",
        f"{deleted} blobs deleted, {(before - after) // 1024} MiB freed "
        f"({before // 1024} -> {after // 1024} MiB); registry writable again",
    )
    return before - after


def rollback_host(inv: Inventory, target: Target, report: Report, dry_run: bool) -> None:
    alias = target.alias
    plan = planner.rollback_plan(inv, alias, read_state(target))
    goal = plan.target
    report.info(f"[{alias}] rolling back to {plan.why}: {goal['registry']}, {goal['nginx']}")
    suffix = " (dry run)" if dry_run else ""
    if not dry_run:
        # First: a rollback cut short and run again then finishes going back.
        record = (json.dumps(plan.record, sort_keys=True) + "\n").encode()
        target.upload([Upload(DEPLOYED, record)])
    for spec in (plan.registry, plan.nginx):
        if spec is None:
            continue
        if not dry_run:
            target.check(replace_script(spec), f"starting {spec.name} {spec.image}")
        back = f"back to {spec.image}"
        if spec.name == REGISTRY:
            back += f" with config {goal['config']}"
        report.changed(alias, f"container {spec.name}", back + suffix)
    if plan.registry is None and plan.nginx is None:
        report.unchanged(alias, "containers", "already run what rollback returns to")
    if dry_run:
        return
    if plan.nginx is None:
        target.check(commands.nginx_reload(), "reloading nginx")
    proof = target.check(verify_script(inv), "verifying the registry (push/pull)").stdout.strip()
    for line in proof.splitlines():
        report.ok(alias, "verify", line)
    if inv.registry.images.registry != goal["registry"]:
        report.info(
            f"[{alias}] note: the inventory still names {inv.registry.images.registry}; "
            "set it back, or the next deploy upgrades again"
        )


@task(
    role="registry",
    help={
        "dry-run": "Say where rollback would return and what it would recreate; change nothing.",
        "force": "Act on -H hosts whose inventory role is not registry.",
    },
)
def rollback(c: Context, dry_run: bool = False, force: bool = False) -> None:
    """Return the registry and proxy to the images and configuration the previous deploy ran."""
    inv = inventory.load()
    report = Report()
    aliases = hosts_for(c, inv, "registry", "rollback", force)

    def work(target: Target) -> None:
        with host_lock(target, "rollback"):
            rollback_host(inv, target, report, dry_run)

    each_host(c, inv, aliases, report, "rollback", work)


ns = Collection("maintenance", gc, rollback)
