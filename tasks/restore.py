"""``fab -H host restore --from DIR``: a snapshot of ``fab backup`` onto a host, then
``deploy`` and its proof.

Onto a host that never ran the registry, or over one that did after a
confirmation: its data folder is then moved aside (never deleted), so a restore
that goes wrong loses no pushed image. The data goes as one tar stream made while
it is sent; /etc/regkit comes back as it was, then deploy makes the host match
the local state (restore that first with ``invoke state.restore``) and proves the
registry with a push and a pull. Clients need nothing: same CA, same names.
"""

from __future__ import annotations

import datetime as dt
import json
import tarfile
from pathlib import Path

from invoke import Collection, Context

from tasks import cli, commands, deploy, inventory, scripts, storage
from tasks.cli import task
from tasks.errors import RegkitError
from tasks.facts import parse_values
from tasks.inventory import Inventory
from tasks.layout import REGISTRY
from tasks.plans import backup as planner
from tasks.plans.backup import V2, Metadata
from tasks.remote.fanout import each_host, hosts_for
from tasks.remote.lock import host_lock
from tasks.remote.target import Target
from tasks.report import Progress, Report


def choose(root: Path, alias: str, name: str) -> tuple[Path, dict[str, int]]:
    """The snapshot to restore onto ``alias`` and its record, checked whole (every blob
    it links is there) before anything on the host is touched."""
    snapshots = root / "snapshots"
    try:
        chosen = snapshots / planner.pick((p.name for p in snapshots.iterdir()), alias, name)
        record = json.loads((chosen / "snapshot.json").read_text())
        data = chosen / "registry" / V2
        links = Metadata({
            str(p.relative_to(data / "repositories")): p.read_bytes()
            for p in (data / "repositories").rglob("link")
        })  # fmt: skip
        missing = [h for h in links.referenced()
                   if not (data / "blobs" / "sha256" / h[:2] / h / "data").is_file()]  # fmt: skip
        counts = {k: int(record[k]) for k in ("tags", "blobs", "bytes_total")}
    except FileNotFoundError as exc:
        raise RegkitError(f"{exc.filename}: missing; is {root} a 'fab backup' folder?") from None
    except ValueError as exc:
        raise RegkitError(f"{snapshots}: {exc}") from None
    except (OSError, KeyError, TypeError) as exc:
        raise RegkitError(f"{snapshots}: cannot read the snapshot: {exc}") from None
    if missing:
        raise RegkitError(
            f"{chosen}: {len(missing)} linked blobs are missing (first sha256:{missing[0]}); "
            "pick another with --snapshot"
        )
    return chosen, counts


def add_tree(tar: tarfile.TarFile, folder: Path, progress: Progress) -> None:
    """``folder`` into ``tar`` as the registry writes its files: root's, 0755 and 0644."""
    for path in sorted(folder.rglob("*")):
        info = tar.gettarinfo(str(path), arcname=str(path.relative_to(folder)))
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = 0o755 if path.is_dir() else 0o644
        if path.is_file():
            with path.open("rb") as f:
                tar.addfile(info, f)
            progress.add(info.size)
        else:
            tar.addfile(info)


def facts_script(inv: Inventory) -> str:
    return scripts.script("restore-facts", data=f"{inv.registry.data_dir}/docker")


def restore_host(
    inv: Inventory,
    target: Target,
    where: tuple[Path, str],
    report: Report,
    yes: bool,
    dry_run: bool,
) -> None:
    alias, data_dir = target.alias, inv.registry.data_dir
    root, wanted = where
    chosen, record = choose(root, alias, wanted)
    report.info(f"[{alias}] restoring snapshot {chosen.name} from {root}")
    facts = parse_values(target.check(facts_script(inv), "reading facts").stdout)
    plan = planner.restore_plan(chosen.name, record, facts, data_dir, dt.datetime.now(dt.UTC))
    if dry_run:
        for step, what in plan.steps():
            report.changed(alias, step, f"{what} (dry run)")
        report.info(f"[{alias}] then deploy, as 'fab deploy' does, and prove it with a push/pull")
        return
    if plan.aside:
        if not yes:
            cli.confirm(
                f"{alias} has registry data; move it aside and restore?",
                f"{alias} has registry data: add --yes to move it aside and restore",
            )
        target.check(
            f"docker rm -f {REGISTRY} >/dev/null 2>&1; "
            + commands.join("mv", f"{data_dir}/docker", plan.aside),
            "moving the registry's data aside",
        )
    progress = Progress(report, alias, plan.bytes_total, "blobs")
    with (
        target.writing(commands.tar_in(data_dir), "sending the snapshot's data") as sink,
        tarfile.open(fileobj=sink, mode="w|", bufsize=1 << 20) as tar,
    ):
        add_tree(tar, chosen / "registry", progress)
    with target.writing(commands.tar_in("/"), "restoring /etc/regkit") as sink:
        sink.write((chosen / "etc-regkit.tar").read_bytes())
    for step, what in plan.steps():
        report.changed(alias, step, what)
    deploy.deploy_host(inv, target, report, dry_run=False)


@task(
    role="registry",
    name="restore",
    help={
        "from": "The backup folder ('fab backup --to'), else the inventory's backup.dir.",
        "snapshot": "Which snapshot (a name under snapshots/); the newest by default.",
        "yes": "Move existing registry data aside without asking.",
        "dry-run": "Read the host and say what restore would do; change nothing.",
        "force": "Act on -H hosts whose inventory role is not registry.",
    },
)
def restore(
    c: Context,
    from_: str = "",
    snapshot: str = "",
    yes: bool = False,
    dry_run: bool = False,
    force: bool = False,
) -> None:
    """Put a backup snapshot on the registry host(s), then deploy and prove it."""
    inv = inventory.load()
    storage.needs_filesystem(inv, "fab restore")
    aliases = hosts_for(c, inv, "registry", "restore", force)
    folder = from_ or inv.backup.dir
    if not folder:
        raise RegkitError(f"{inv.source}: no backup folder; give --from DIR or set backup.dir")
    where = (inv.resolve(folder), snapshot)
    report = Report()
    deploy.ensure_local(inv, report, dry_run)

    def work(target: Target) -> None:
        if dry_run:
            restore_host(inv, target, where, report, yes, dry_run=True)
            return
        with host_lock(target, "restore"):
            restore_host(inv, target, where, report, yes, dry_run=False)

    each_host(c, inv, aliases, report, "restore", work)


ns = Collection("restore", restore)
