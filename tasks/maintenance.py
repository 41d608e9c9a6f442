"""Day two on the registry host: ``fab gc`` and ``fab rollback``.

Garbage collection follows distribution's rule: never while pushes can happen.
The registry runs read-only (pulls work, pushes get a clear read-only error)
while ``garbage-collect`` runs, after a dry run that says what would go. Where
registry hosts share one S3 bucket, every one of them is read-only while one of
them collects, once; each is restarted writable afterwards, which also empties its
blob descriptor cache (it would otherwise answer for deleted blobs: measured in
the lab, a HEAD of a collected layer got 200 and its GET broke off mid-transfer).

Rollback returns the registry and the proxy to the images, and the registry to
the staged configuration, that the previous deploy ran
(``/etc/regkit/deployed.json``, see :mod:`tasks.plans.maintenance`); data and
users are untouched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from shlex import quote

from invoke import Collection, Context

from tasks import commands, inventory, storage, wanted
from tasks.cli import task
from tasks.errors import RemoteError
from tasks.inventory import Inventory
from tasks.layout import (
    DEPLOYED,
    MIRROR,
    REGISTRY,
    REGISTRY_CONFIG,
    probe_tag,
)
from tasks.plans import maintenance as planner
from tasks.plans.deploy_steps import replace_script, verify_script
from tasks.plans.maintenance import HostState
from tasks.remote.fanout import each_host, hosts_for
from tasks.remote.lock import host_lock
from tasks.remote.target import Target, open_target
from tasks.remote.upload import Upload
from tasks.report import Report

# The registry binary: "registry" in the official image, "docker-registry" in Debian's.
FIND_BINARY = "command -v registry || command -v docker-registry"


def read_state(target: Target) -> HostState:
    """What runs on the host, and its deploy record, in one command."""
    return planner.parse_facts(target.check(planner.facts_script(), "reading the host").stdout)


def set_readonly(
    inv: Inventory, target: Target, state: HostState, on: bool, flag: str = "gc"
) -> None:
    """Recreate the registry with the read-only (or its normal) config, then reload nginx.
    nginx's ``flag`` (layout.MAINTENANCE: why pushes are refused) is up for as long as
    the registry may be read-only: raised first, lowered as soon as it is writable."""
    normal, readonly = planner.gc_configs(target.alias, state)
    spec = wanted.registry_spec(inv, readonly if on else normal, image=state.registry_image)
    mode = "read-only" if on else "read-write"
    if on:
        target.check(commands.maintenance_flag(flag, True), f"raising nginx's {flag} flag")
    target.check(replace_script(spec), f"restarting {REGISTRY} {mode}")
    if not on:
        target.check(commands.maintenance_flag(flag, False), f"lowering nginx's {flag} flag")
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
    report = Report()
    aliases = collectors(inv, hosts_for(c, inv, "registry", "gc", force), report)

    def work(target: Target) -> None:
        with replicas_locked(c, inv, target, "gc") as targets:
            collect_garbage(inv, targets, report, dry_run, delete_untagged)
            for each in targets:
                collect_mirror(inv, each, report, dry_run)

    each_host(c, inv, aliases, report, "gc", work)


def collect_mirror(inv: Inventory, target: Target, report: Report, dry_run: bool) -> None:
    """The mirror's cache, on each host's own disk: collected with the mirror stopped
    (its clients pull from the upstream meanwhile: every runtime falls back on its own)."""
    m, alias = inv.registry.mirror, target.alias
    if m is None:
        return
    state = target.run(commands.join("docker", "inspect", "--format", "{{.State.Running}}", MIRROR))
    if state.stdout.strip() != "true":
        report.skipped(alias, "mirror gc", f"{MIRROR} is not running; deploy first")
        return
    repositories = f"{m.data_dir.rstrip('/')}/docker/registry/v2/repositories"
    if target.run(commands.join("test", "-d", repositories)).failed:
        report.unchanged(alias, "mirror gc", "its cache is empty: nothing to collect")
        return
    planned = eligible(mirror_collect(inv, target, dry_run=True))
    report.ok(alias, "mirror gc dry run", f"{planned} blobs eligible for deletion in {m.data_dir}")
    if dry_run or not planned:
        report.unchanged(alias, "mirror gc", "dry run only" if dry_run else "nothing to delete")
        return
    report.info(f"[{alias}] {MIRROR} stopped while its cache is collected: pulls go upstream")
    target.check(commands.join("docker", "stop", MIRROR), f"stopping {MIRROR}")
    try:
        deleted = eligible(mirror_collect(inv, target, dry_run=False))
    finally:
        target.check(commands.join("docker", "start", MIRROR), f"starting {MIRROR}")
    report.changed(alias, "mirror gc", f"{deleted} blobs deleted from {m.data_dir}; serving again")


def mirror_collect(inv: Inventory, target: Target, dry_run: bool) -> str:
    """garbage-collect on the mirror's cache: in the running mirror for a dry run, else in a
    container of its image with its folders (``--volumes-from``), with no network (the
    mirror is stopped)."""
    flags = ["--dry-run"] if dry_run else []
    collect = f'exec "$({FIND_BINARY})" garbage-collect {commands.join(*flags, REGISTRY_CONFIG)}'
    if dry_run:
        command = commands.join("docker", "exec", MIRROR, "sh", "-c", collect)
    else:
        image = commands.join("docker", "inspect", "--format", "{{.Config.Image}}", MIRROR)
        run = commands.join(
            "docker", "run", "--rm", "--network", "none", "--volumes-from", MIRROR,
            "--entrypoint", "sh",
        )  # fmt: skip
        command = f'image=$({image}) && {run} "$image" -c {commands.join(collect)}'
    return target.check(f"{command} 2>&1", "mirror garbage-collect").stdout


def collectors(inv: Inventory, aliases: list[str], report: Report) -> list[str]:
    """The hosts that collect: each of ``aliases``, or where they share a bucket, the first."""
    shared, s3 = storage.sharing(inv), inv.registry.storage.s3
    if not shared or s3 is None:
        return aliases
    report.info(
        f"{', '.join(shared)} share bucket {s3.bucket}: {aliases[0]} collects once, "
        "with every one of them read-only meanwhile"
    )
    return aliases[:1]


@contextmanager
def replicas_locked(
    c: Context, inv: Inventory, target: Target, task: str
) -> Iterator[list[Target]]:
    """``target``, then every other registry host on its bucket, each under its host lock
    (a replica that cannot be reached or locked stops the task before any change)."""
    with ExitStack() as stack:
        stack.enter_context(host_lock(target, task))
        targets = [target]
        for alias in storage.sharing(inv):
            if alias != target.alias:
                other = open_target(inv, alias, c)
                stack.enter_context(host_lock(other, task))
                targets.append(other)
        yield targets


def collect_garbage(
    inv: Inventory, targets: list[Target], report: Report, dry_run: bool, delete_untagged: bool
) -> int:
    """Dry run, then (unless ``dry_run``) collect on the first of ``targets`` with all of
    them (the replicas on its bucket) read-only; KiB freed on its disk (0 on S3)."""
    collector, alias = targets[0], targets[0].alias
    states = [(target, read_state(target)) for target in targets]
    for target, state in states:
        planner.gc_configs(target.alias, state)
    s3 = inv.registry.storage.s3
    before = 0 if s3 else disk_use(inv, collector)
    where = f"bucket {s3.bucket} at {s3.endpoint}" if s3 else f"{before // 1024} MiB in use"
    planned = eligible(collect(collector, dry_run=True, delete_untagged=delete_untagged))
    report.ok(alias, "gc dry run", f"{planned} blobs eligible for deletion, {where}")
    if dry_run or not planned:
        report.unchanged(alias, "gc", "dry run only" if dry_run else "nothing to delete")
        return 0
    names = ", ".join(target.alias for target in targets)
    report.info(f"[{alias}] read-only while collecting ({names}): pushes are refused, pulls work")
    made: list[tuple[Target, HostState]] = []
    try:
        for target, state in states:
            # Listed first: a restart cut off halfway is restored too.
            made.append((target, state))
            set_readonly(inv, target, state, True)
        deleted = eligible(collect(collector, dry_run=False, delete_untagged=delete_untagged))
    finally:
        writable_again(inv, made)
    for target, _ in states[1:]:
        why = f"while {alias} collected; writable again, restarted so its cache forgets"
        report.changed(target.alias, "read-only", why + " the deleted blobs")
    if s3:
        report.changed(
            alias,
            "gc",
            f"{deleted} blobs deleted from bucket {s3.bucket}; the S3 service frees their "
            "space on its own schedule; every registry writable again",
        )
        return 0
    after = disk_use(inv, collector)
    report.changed(
        alias,
        "gc",
        f"{deleted} blobs deleted, {(before - after) // 1024} MiB freed "
        f"({before // 1024} -> {after // 1024} MiB); registry writable again",
    )
    return before - after


def writable_again(inv: Inventory, made: list[tuple[Target, HostState]]) -> None:
    """Restore each registry made read-only; one that fails does not keep the others
    read-only, and the error names every one that is still read-only."""
    stuck = []
    for target, state in made:
        try:
            set_readonly(inv, target, state, False)
        except Exception as exc:  # one host's failure must not keep the others read-only
            stuck.append(f"{target.alias} ({exc})")
    if stuck:
        raise RemoteError(
            f"still read-only: {'; '.join(stuck)}; run 'fab deploy' on each to make it writable"
        )


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
    proof = target.check(
        verify_script(inv, probe_tag(alias)), "verifying the registry (push/pull)"
    ).stdout.strip()
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
