"""Day two on the registry host: ``fab gc`` and ``fab rollback``.

Garbage collection follows distribution's rule: never while pushes can happen.
The registry runs read-only (pulls work, pushes get a clear read-only error)
while ``garbage-collect`` runs, after a dry run that says what would go.

Rollback returns the registry and the proxy to the images the previous deploy
ran (``/etc/regkit/deployed.json``); data and users are untouched.
"""

from __future__ import annotations

import json
import re
from shlex import quote

from invoke import Collection, Context

from tasks import commands, inventory, wanted
from tasks.cli import task
from tasks.errors import RegkitError
from tasks.inventory import Inventory
from tasks.layout import DEPLOYED, NGINX, REGISTRY, REGISTRY_CONFIG_MOUNT
from tasks.plans.deploy import replace_script, verify_script
from tasks.remote.fanout import each_host, hosts_for
from tasks.remote.lock import host_lock
from tasks.remote.target import Target
from tasks.remote.upload import Upload
from tasks.report import Report

# The registry binary: "registry" in the official image, "docker-registry" in Debian's.
FIND_BINARY = "command -v registry || command -v docker-registry"


def set_readonly(inv: Inventory, t: Target, on: bool, image: str = "") -> None:
    """Recreate the registry with the read-only (or the normal) config, then reload nginx."""
    digest = wanted.registry_config(inv, readonly=on).digest
    spec = wanted.registry_spec(inv, digest, image=image, readonly=on)
    t.check(replace_script(spec), f"restarting {REGISTRY} {'read-only' if on else 'read-write'}")
    t.check(commands.nginx_reload(), "reloading nginx")


def disk_use(inv: Inventory, t: Target) -> int:
    out = t.check(f"du -sk {quote(inv.registry.data_dir)} | cut -f1", "measuring disk use").stdout
    return int(out.strip() or 0)


def collect(t: Target, dry_run: bool, delete_untagged: bool) -> str:
    flags = " ".join(
        f for f, on in (("--dry-run", dry_run), ("--delete-untagged", delete_untagged)) if on
    )
    return t.check(
        f"bin=$(docker exec {REGISTRY} sh -c {quote(FIND_BINARY)}) && "
        f'docker exec {REGISTRY} "$bin" garbage-collect {flags} '
        f"{REGISTRY_CONFIG_MOUNT}/config.yml 2>&1",
        "garbage-collect" + (" --dry-run" if dry_run else ""),
    ).stdout


def eligible(output: str) -> int:
    """How many blobs garbage-collect deletes (or would)."""
    return len(re.findall(r"blob eligible for deletion", output))


def current_image(t: Target) -> str:
    return t.check(
        f"docker inspect --format '{{{{.Config.Image}}}}' {REGISTRY}", "reading the registry image"
    ).stdout.strip()


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
    rep = Report()
    aliases = hosts_for(c, inv, "registry", "gc", force)

    def work(t: Target) -> None:
        with host_lock(t, "gc"):
            collect_garbage(inv, t, rep, dry_run, delete_untagged)

    each_host(c, inv, aliases, rep, "gc", work)


def collect_garbage(
    inv: Inventory, t: Target, rep: Report, dry_run: bool, delete_untagged: bool
) -> None:
    """Dry run, then (unless ``dry_run``) collect with the registry read-only."""
    alias = t.alias
    before = disk_use(inv, t)
    planned = eligible(collect(t, dry_run=True, delete_untagged=delete_untagged))
    rep.ok(
        alias, "gc dry run", f"{planned} blobs eligible for deletion, {before // 1024} MiB in use"
    )
    if dry_run or not planned:
        rep.unchanged(alias, "gc", "dry run only" if dry_run else "nothing to delete")
        return
    image = current_image(t)
    rep.info(f"[{alias}] registry read-only while collecting: pushes are refused, pulls work")
    try:
        set_readonly(inv, t, True, image)
        deleted = eligible(collect(t, dry_run=False, delete_untagged=delete_untagged))
    finally:
        set_readonly(inv, t, False, image)
    after = disk_use(inv, t)
    rep.changed(
        alias,
        "gc",
        f"{deleted} blobs deleted, {(before - after) // 1024} MiB freed "
        f"({before // 1024} -> {after // 1024} MiB); registry writable again",
    )


def rollback_host(inv: Inventory, t: Target, rep: Report) -> None:
    raw = t.check(f"cat {DEPLOYED} 2>/dev/null || echo '{{}}'", "reading the deploy record").stdout
    record = json.loads(raw or "{}")
    previous = record.get("previous") or {}
    if not previous.get("registry") or not previous.get("nginx"):
        raise RegkitError(
            f"{t.alias}: no previous deploy recorded in {DEPLOYED}; nothing to roll back to"
        )
    config = wanted.registry_config(inv).digest
    if previous["registry"] != record.get("registry"):
        t.check(
            replace_script(wanted.registry_spec(inv, config, image=previous["registry"])),
            f"starting {REGISTRY} {previous['registry']}",
        )
        rep.changed(t.alias, f"container {REGISTRY}", f"back to {previous['registry']}")
    if previous["nginx"] != record.get("nginx"):
        t.check(
            replace_script(wanted.nginx_spec(inv, previous["nginx"])),
            f"starting {NGINX} {previous['nginx']}",
        )
        rep.changed(t.alias, f"container {NGINX}", f"back to {previous['nginx']}")
    else:
        t.check(commands.nginx_reload(), "reloading nginx")
    proof = t.check(verify_script(inv), "verifying the registry (push/pull)").stdout.strip()
    for line in proof.splitlines():
        rep.ok(t.alias, "verify", line)
    swapped = {**previous, "previous": {k: record.get(k) for k in ("registry", "nginx")}}
    t.upload([Upload(DEPLOYED, (json.dumps(swapped, sort_keys=True) + "\n").encode())])
    if inv.registry.images.registry != previous["registry"]:
        rep.info(
            f"[{t.alias}] note: the inventory still names {inv.registry.images.registry}; "
            "set it back, or the next deploy upgrades again"
        )


@task(role="registry", help={"force": "Act on -H hosts whose inventory role is not registry."})
def rollback(c: Context, force: bool = False) -> None:
    """Return the registry and proxy to the images the previous deploy ran (data kept)."""
    inv = inventory.load()
    rep = Report()
    aliases = hosts_for(c, inv, "registry", "rollback", force)

    def work(t: Target) -> None:
        with host_lock(t, "rollback"):
            rollback_host(inv, t, rep)

    each_host(c, inv, aliases, rep, "rollback", work)


ns = Collection("maintenance", gc, rollback)
