"""``fab migrate-storage --to s3``: a registry's data from its host's disk into the bucket.

The inventory names the goal (``registry.storage.driver: s3``); the registry host
still runs on its disk. The move: refuse if another registry host already serves
the bucket or keeps images of its own; make the registry read-only (pulls work),
read every tag and its digest, verify every blob's sha256 and copy the tree into
the bucket from the host (the filesystem and S3 layouts are the same tree under
the root directory), then deploy every registry host on S3 (a roll, each proven)
and read every tag back through each of them: each must have the digest it had. A
corrupt blob is named and nothing switches; a failure before the deploy leaves the
registry writable on its disk. A run after a roll cut short finishes it. The data
on the disk stays until ``--delete-source``, on a later run, once every file of it
is in the bucket with its size. What runs on the host: :mod:`tasks.plans.migrate`.
"""

from __future__ import annotations

import time

from invoke import Collection, Context

from tasks import catalog, deploy, inventory, storage
from tasks.cli import task
from tasks.errors import InventoryError, RegkitError, RemoteError
from tasks.facts import parse_values
from tasks.inventory import Inventory
from tasks.inventory_storage import S3
from tasks.layout import PROBE_REPO, S3_CA_FILE
from tasks.maintenance import read_state, set_readonly
from tasks.plans import migrate as planner
from tasks.plans.migrate import Tags
from tasks.remote.fanout import each_host, hosts_for
from tasks.remote.lock import host_lock
from tasks.remote.target import Target, open_target
from tasks.remote.upload import Upload
from tasks.report import Report, plural


def bucket(inv: Inventory) -> S3:
    """The bucket the inventory names: where the data goes."""
    s3 = inv.registry.storage.s3
    if s3 is None:
        raise InventoryError(
            f"{inv.source}: registry.storage.driver is filesystem; set driver: s3 and its "
            "s3: settings (where the data goes), store the keys with 'invoke "
            "storage.set-credentials', then run this again"
        )
    return s3


def read_facts(inv: Inventory, target: Target) -> dict[str, str]:
    return parse_values(target.check(planner.facts_script(inv), "reading the host").stdout)


def read_tags(inv: Inventory, target: Target) -> Tags:
    """Every tag and its digest, read through ``target``'s own proxy; but the deploy's
    probe, which each host's deploy pushes anew."""
    with catalog.api_session(inv, target) as api:
        tags = catalog.read_catalog(api)
    return {f"{t.repository}:{t.tag}": t.digest for t in tags if t.repository != PROBE_REPO}


def read_tags_when_up(inv: Inventory, target: Target, tries: int = 10) -> Tags:
    """:func:`read_tags`, waiting out a registry just restarted (read-only) and nginx's
    asynchronous reload, as deploy's proof does."""
    for _ in range(tries - 1):
        try:
            return read_tags(inv, target)
        except RemoteError:
            time.sleep(1)
    return read_tags(inv, target)


def with_keys(
    inv: Inventory, target: Target, keys: storage.S3Keys, script: str, what: str, report: Report
) -> None:
    """Run ``script`` with curl's config for the bucket on the host (removed after, by the
    script too; the service's private CA, if any, stays where deploy puts it), its
    progress lines shown."""
    alias = target.alias
    uploads = [Upload(planner.CURL_CONFIG, planner.curl_config(bucket(inv), keys), 0o600)]
    ca = storage.s3_ca(inv)
    if ca:
        uploads.append(Upload(S3_CA_FILE, ca))
    target.upload(uploads)
    try:
        target.check(script, what, stream=lambda line: report.info(f"[{alias}]   {line}"))
    finally:
        target.check(planner.remove_config(), "removing the S3 keys' curl config")


def copy(inv: Inventory, target: Target, keys: storage.S3Keys, report: Report) -> Tags:
    """With the registry read-only, verify and copy its tree into the bucket, then read
    its tags (they cannot move meanwhile); on any failure it is writable on its disk
    again."""
    alias, disk = target.alias, planner.on_disk(inv)
    state = read_state(target)
    report.info(f"[{alias}] registry read-only while its data is copied: pulls work")
    try:
        set_readonly(disk, target, state, True, flag="migrate")
        script = planner.copy_script(inv, bucket(inv), "copy")
        with_keys(inv, target, keys, script, "copying into the bucket", report)
        before = read_tags_when_up(inv, target)
    except BaseException as exc:
        set_readonly(disk, target, state, False, flag="migrate")
        if isinstance(exc, RegkitError):
            raise RemoteError(
                f"{exc}; nothing was switched: {alias} is writable again, on its disk"
            ) from None
        raise
    return before


def switch(c: Context, inv: Inventory, alias: str, report: Report) -> None:
    """Deploy every registry host on the bucket (a roll)."""
    try:
        deploy.deploy_all(c, inv, inv.with_role("registry"), report)
    except RegkitError as exc:
        raise RemoteError(
            f"{exc}; the data is in the bucket and still on {alias}'s disk: run "
            "'fab migrate-storage --to s3' again to finish the switch, or set "
            "registry.storage back to filesystem and deploy to return"
        ) from None


def migrate_host(c: Context, inv: Inventory, target: Target, report: Report, dry_run: bool) -> None:
    """Move ``target``'s data into the bucket, deploy every registry host on it, and
    prove every tag through each."""
    s3 = bucket(inv)
    alias = target.alias
    values = read_facts(inv, target)
    if planner.on_s3(values):
        report.unchanged(alias, "storage", f"already on bucket {s3.bucket}")
        if not dry_run:
            switch(c, inv, alias, report)
        if values.get("files"):
            report.info(
                f"[{alias}] its data from before stays in {inv.registry.data_dir} "
                f"({values.get('bytes')}); 'fab migrate-storage --to s3 --delete-source' "
                "removes it"
            )
        return
    if not values.get("files"):
        raise RemoteError(
            f"{alias}: no registry data under {inv.registry.data_dir}; nothing to move: "
            "'fab deploy' puts the registry on the bucket"
        )
    others = {
        other: read_facts(inv, open_target(inv, other, c))
        for other in inv.with_role("registry")
        if other != alias
    }
    planner.others_allow(alias, others, s3.bucket)
    where = f"{s3.endpoint}/{s3.bucket}{s3.root_directory.rstrip('/')}"
    what = f"{values['files']} files ({values.get('bytes', '?')}) from {inv.registry.data_dir}"
    if dry_run:
        report.changed(alias, "storage", f"would copy {what} to {where}, verifying each blob")
        return
    keys = storage.read_keys(inv)
    with host_lock(target, "migrate-storage"):
        before = copy(inv, target, keys, report)
    tags = plural(len(before), "tag")
    report.changed(alias, "storage", f"copied {what} to {where}, every blob verified; {tags}")
    switch(c, inv, alias, report)
    for other in inv.with_role("registry"):
        after = read_tags(inv, target if other == alias else open_target(inv, other, c))
        missing = planner.differences(before, after)
        if missing:
            raise RemoteError(
                f"{other}: after the move, these tags differ: {', '.join(missing)}; the data "
                f"on {alias}'s disk is untouched: set registry.storage back and deploy"
            )
        report.ok(other, "tags", f"{tags}, each with the digest it had")


def delete_source_host(inv: Inventory, target: Target, report: Report, dry_run: bool) -> None:
    """Delete the data on the disk, once the registry runs on the bucket and it holds
    every file of it, with its size."""
    s3 = bucket(inv)
    alias = target.alias
    data = inv.registry.data_dir
    values = read_facts(inv, target)
    if not planner.on_s3(values):
        raise RemoteError(
            f"{alias}: the registry still runs on its disk; move it first: "
            "'fab migrate-storage --to s3'"
        )
    if not values.get("files"):
        report.unchanged(alias, f"data {data}", "nothing left on the disk")
        return
    if dry_run:
        report.changed(alias, f"data {data}", f"would delete {values['bytes']} (dry run)")
        return
    keys = storage.read_keys(inv)
    with host_lock(target, "migrate-storage"):
        script = planner.copy_script(inv, s3, "check")
        with_keys(inv, target, keys, script, "checking the bucket", report)
        target.check(planner.delete_tree(inv), f"deleting {data}/docker")
    report.changed(alias, f"data {data}", f"deleted {values['bytes']}: the bucket holds all of it")


@task(
    name="migrate-storage",
    role="registry",
    help={
        "to": "Where the data goes: s3 (the inventory's registry.storage.s3).",
        "delete-source": "On a later run: delete the data on the disk, once the bucket "
        "holds every file of it.",
        "dry-run": "Say what would be copied (or deleted); change nothing.",
        "force": "Act on -H hosts whose inventory role is not registry.",
    },
)
def migrate_storage(
    c: Context,
    to: str = "",
    delete_source: bool = False,
    dry_run: bool = False,
    force: bool = False,
) -> None:
    """Move a registry's images from its host's disk into the S3 bucket, then switch."""
    inv = inventory.load()
    if to != "s3":
        raise RegkitError("say where the data goes: --to s3 (the one move there is)")
    bucket(inv)
    report = Report()
    aliases = hosts_for(c, inv, "registry", "migrate-storage", force)
    if len(aliases) > 1 and not delete_source:
        raise RegkitError(
            f"migrate-storage moves one host's images: name it alone (-H {aliases[0]}); "
            "the deploy that follows puts every registry host on the bucket"
        )

    def work(target: Target) -> None:
        if delete_source:
            delete_source_host(inv, target, report, dry_run)
        else:
            migrate_host(c, inv, target, report, dry_run)

    each_host(c, inv, aliases, report, "migrate-storage", work)


ns = Collection("migrate", migrate_storage)
