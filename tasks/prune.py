"""``fab prune``: delete what the retention rules do not keep, then collect garbage.

Reads every tag through the registry's API (as ``fab catalog`` does), makes the plan
(:mod:`tasks.plans.prune`), prints it, and with ``--yes`` (or a confirmation)
deletes the manifests by digest, each only if every tag on it still points to that
digest (a push that landed meanwhile wins), then runs ``fab gc``'s safe garbage
collection and reports the space freed.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from urllib.parse import quote

from invoke import Collection, Context

from tasks import catalog, cli, inventory, users
from tasks.catalog import MANIFEST_TYPES, RegistryApi
from tasks.cli import task
from tasks.errors import RegkitError, RemoteError
from tasks.inventory import Inventory
from tasks.layout import PRUNED
from tasks.maintenance import collect_garbage, collectors, replicas_locked
from tasks.plans import prune as planner
from tasks.plans.prune import Deletion, Image, PrunePlan
from tasks.remote.fanout import each_host, hosts_for
from tasks.remote.target import Target
from tasks.remote.upload import Upload
from tasks.report import Report, aligned, human_size, plural


def images(api: RegistryApi) -> list[Image]:
    return [
        Image(t.repository, t.tag, t.digest, t.size, t.created, t.index, tuple(t.manifests))
        for t in catalog.read_catalog(api)
    ]


def table(plan: PrunePlan, now: dt.datetime) -> str:
    """One line per tag: what happens to it and why (pure)."""
    rows = [("REPOSITORY", "TAG", "DIGEST", "AGE", "SIZE", "RULE", "DECISION")]
    for d in plan.decisions:
        created = planner.parse_time(d.image.created)
        age = f"{(now - created).days}d" if created else "-"
        rows.append(
            (
                d.image.repository,
                d.image.tag,
                d.image.digest[:19],
                age,
                human_size(d.image.size),
                str(d.rule + 1),
                f"{'keep' if d.keep else 'delete'}: {d.reason}",
            )
        )
    tags = sum(len(d.tags) for d in plan.deletions)
    summary = (
        f"{plural(tags, 'tag')} ({plural(len(plan.deletions), 'manifest')}, "
        f"{human_size(plan.freed)}) to delete, {sum(d.keep for d in plan.decisions)} kept; "
        f"{plural(len(plan.untouched), 'repository', 'repositories')} no rule matches left alone"
    )
    return f"{aligned(rows)}\n{summary}"


def json_lines(plan: PrunePlan, host: str) -> str:
    """The plan for scripts: one JSON object per tag (JSON Lines), as the table (pure)."""
    return "\n".join(
        json.dumps(
            {
                "host": host,
                "repository": d.image.repository,
                "tag": d.image.tag,
                "digest": d.image.digest,
                "created": d.image.created or None,
                "size": d.image.size,
                "rule": d.rule + 1,
                "decision": "keep" if d.keep else "delete",
                "reason": d.reason,
            }
        )
        for d in plan.decisions
    )


def still_there(api: RegistryApi, deletion: Deletion) -> bool:
    """Whether every tag of ``deletion`` still points to its digest (read right now)."""
    scope = catalog.pull_scope(deletion.repository)
    for tag in deletion.tags:
        path = f"/v2/{quote(deletion.repository)}/manifests/{quote(tag)}"
        status, _, headers = api.call("HEAD", path, api.bearer(scope), MANIFEST_TYPES)
        if status != 200 or headers.get("docker-content-digest") != deletion.digest:
            return False
    return True


def delete(api: RegistryApi, deletion: Deletion) -> None:
    path = f"/v2/{quote(deletion.repository)}/manifests/{deletion.digest}"
    scope = f"repository:{deletion.repository}:delete"
    status, body, _ = api.call("DELETE", path, api.bearer(scope))
    if status != 202:
        raise RemoteError(f"DELETE {path}: {status} {body[:200].decode(errors='replace')}")


def apply(api: RegistryApi, alias: str, plan: PrunePlan, report: Report) -> tuple[int, int]:
    """Delete the plan's manifests whose tags have not moved; (deleted, kept as moved)."""
    deleted = skipped = 0
    api.want(f"repository:{d.repository}:{a}" for d in plan.deletions for a in ("pull", "delete"))
    for deletion in plan.deletions:
        if still_there(api, deletion):
            delete(api, deletion)
            deleted += 1
        else:
            skipped += 1
            report.skipped(alias, f"{deletion.repository}@{deletion.digest[:19]}",
                           "a tag moved since the plan (a push landed): kept")  # fmt: skip
    return deleted, skipped


def record(now: dt.datetime, deleted: int, skipped: int, freed_kib: int) -> bytes:
    """What the host keeps of its last prune, for ``fab status`` (pure)."""
    run = {
        "finished": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "manifests_deleted": deleted,
        "kept_moved": skipped,
        "freed_kib": freed_kib,
    }
    return (json.dumps(run, sort_keys=True) + "\n").encode()


def prune_host(
    inv: Inventory, targets: list[Target], report: Report, options: dict[str, bool]
) -> None:
    """Prune through the first of ``targets``; all of them (replicas) are read-only while
    it collects."""
    target, alias = targets[0], targets[0].alias
    now = dt.datetime.now(dt.UTC)
    with catalog.api_session(inv, target) as api:
        plan = planner.plan(inv.retention, images(api), now, options["allow_empty"])
        if options["json"]:
            print(json_lines(plan, alias))
        else:
            print(table(plan, now))
        if options["dry_run"]:
            report.unchanged(alias, "prune", "dry run")
            return
        if plan.deletions and not options["yes"]:
            count = len(plan.deletions)
            cli.confirm(f"Delete these {count} manifests?", refused="nothing was deleted")
        deleted, skipped = apply(api, alias, plan, report)
    if deleted:
        report.changed(alias, "prune", f"{deleted} manifests deleted, {skipped} kept (moved)")
        freed = collect_garbage(inv, targets, report, dry_run=False, delete_untagged=False)
    else:
        report.unchanged(alias, "prune", f"nothing to delete, {skipped} kept (moved)")
        freed = 0
    finished = dt.datetime.now(dt.UTC)
    target.upload([Upload(PRUNED, record(finished, deleted, skipped, freed))])


@task(
    role="registry",
    help={
        "yes": "Delete without asking (for cron or CI).",
        "dry-run": "Print the plan and stop.",
        "json": "Print the plan as JSON Lines: one object per tag, with its decision and why.",
        "allow-empty": "Allow a rule to delete every tag of a repository, this run only.",
        "force": "Act on -H hosts whose inventory role is not registry.",
    },
)
def prune(
    c: Context,
    yes: bool = False,
    dry_run: bool = False,
    json_: bool = False,
    allow_empty: bool = False,
    force: bool = False,
) -> None:
    """Delete the tags the retention rules do not keep, then collect the garbage."""
    inv = inventory.load()
    report = Report(stream=sys.stderr)
    if not inv.retention:
        raise RegkitError(f"{inv.source}: retention: no rules; prune keeps everything without one")
    aliases = collectors(inv, hosts_for(c, inv, "registry", "prune", force), report)
    users.probe_credential(inv)
    options = {"yes": yes, "dry_run": dry_run, "json": json_, "allow_empty": allow_empty}

    def work(target: Target) -> None:
        with replicas_locked(c, inv, target, "prune") as targets:
            prune_host(inv, targets, report, options)

    each_host(c, inv, aliases, report, "prune", work)


ns = Collection("prune", prune)
