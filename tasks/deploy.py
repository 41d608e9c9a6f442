"""``fab -H regbox deploy``: the registry and its nginx proxy, over SSH, verified.

Read the host's facts in one command (in the one that takes the host lock, except
for a dry run, which takes none), build the plan
(:mod:`tasks.plans.deploy`), then apply it: only the apply step runs commands,
and ``--dry-run`` walks the same steps without running them. What goes where on
the host is in :mod:`tasks.layout`.
"""

from __future__ import annotations

import difflib
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from invoke import Collection, Context

from tasks import certificates, commands, inventory, pki, ship, signing, users, wanted
from tasks.cli import task
from tasks.errors import PkiError, RegkitError, RemoteError
from tasks.inventory import Inventory
from tasks.plans import deploy as planner
from tasks.plans import deploy_facts, deploy_steps
from tasks.plans import undeploy as undeploy_planner
from tasks.plans.deploy import DeployPlan
from tasks.plans.deploy_facts import DeployFacts
from tasks.plans.deploy_steps import Step
from tasks.remote.fanout import each_host, hosts_for
from tasks.remote.lock import host_lock
from tasks.remote.target import Target, open_target
from tasks.remote.upload import Upload
from tasks.report import Report


def ensure_local(inv: Inventory, report: Report, dry_run: bool = False) -> None:
    """Local material: a CA and server certificate matching the inventory, the users."""
    paths = pki.paths(inv)
    if not pki.ca_exists(paths):
        if dry_run:
            raise PkiError(f"{paths.root}: no CA yet (a dry run makes none); run 'invoke pki.init'")
        report.info("no CA yet: making one (the CA passphrase is asked once, then kept encrypted)")
        pki.init_pki(inv, pki.ask_passphrase(confirm=True))
        fingerprint = certificates.fingerprint(pki.read_cert(paths.ca_cert))
        report.changed("local", "PKI", f"new CA, fingerprint {fingerprint}")
    else:
        pki.check_server(inv)
        report.unchanged("local", "PKI", "CA and server certificate match the inventory")
    if signing.ensure(inv):
        report.changed("local", "token signing key", f"new, in {signing.key_path(inv).parent}")
    users.ensure_probe_credential(inv)
    users.deployed_htpasswd(inv)


def read_plan(
    inv: Inventory,
    target: Target,
    files: list[Upload],
    facts_output: str | None = None,
    ship_images: bool = False,
) -> tuple[DeployFacts, DeployPlan]:
    """The host's facts and the plan they make; ``facts_output`` is what the facts
    script printed, if it already ran (with the host lock), else it runs now."""
    if facts_output is None:
        facts_output = target.check(deploy_facts.facts_script(inv, files), "reading facts").stdout
    facts = deploy_facts.parse_facts(facts_output)
    return facts, planner.plan(inv, target.alias, files, facts, ship_images)


def deploy_host(
    inv: Inventory,
    target: Target,
    report: Report,
    dry_run: bool,
    facts_output: str | None = None,
    files: list[Upload] | None = None,
    parallel: bool = False,
    source: ship.ImageSource | None = None,
) -> DeployPlan:
    """Deploy to one connected host (or, with ``dry_run``, say what that would change).

    ``files`` is what :func:`tasks.wanted.registry_files` made, if the caller has it.
    ``parallel``: other hosts deploy at the same time, so this one refuses, before any
    change, a plan that recreates a container. ``source``: ship the images the host
    lacks from there (``--ship-images``), not pull them."""
    alias = target.alias
    files = files if files is not None else wanted.registry_files(inv)
    facts, plan = read_plan(inv, target, files, facts_output, source is not None)
    recreated = planner.recreated(plan)
    if parallel and recreated:
        raise RemoteError(
            f"{alias}: --parallel, but this deploy recreates {', '.join(recreated)}: all "
            "hosts at once could stop serving together; deploy without --parallel (it rolls)"
        )
    shipped = ship.require(source, alias, plan.ship) if source else {}
    report.ok(alias, "preflight", plan.preflight)
    for warning in plan.warnings:
        report.info(f"[{alias}] WARNING: {warning}")
    for step in deploy_steps.steps(inv, plan):
        if step.kind == "ship" and source and not dry_run:
            why = ship.ship(target, source, step.command, shipped[step.command], report)
            report.changed(alias, step.subject, why)
            continue
        apply_step(target, report, step, dry_run)
    if dry_run:
        show_diffs(target, report, [c.upload for c in plan.files], facts)
    summary = ("would change" if plan.changes else "changes nothing") if dry_run else "applied"
    report.info(f"[{alias}] plan {plan.digest}: {summary}")
    return plan


def apply_step(target: Target, report: Report, step: Step, dry_run: bool) -> None:
    """Carry out one step of a plan (unless ``dry_run``) and report it."""
    alias = target.alias
    if step.skipped:
        report.skipped(alias, step.subject, step.why)
        return
    if step.kind == "check":
        if not dry_run:
            check(target, report, step)
        return
    if not step.why:
        report.unchanged(alias, step.subject, step.unchanged)
        return
    started = time.monotonic()
    if not dry_run:
        run(target, report, step)
    suffix = " (dry run)" if dry_run else ""
    if step.kind == "build" and not dry_run:
        suffix = f" in {time.monotonic() - started:.1f} s"
    for subject, why in step.details or ((step.subject, step.why),):
        report.changed(alias, subject, why + suffix)


def run(target: Target, report: Report, step: Step) -> None:
    if step.kind == "upload":
        target.upload(step.uploads)
    elif step.kind == "build":
        report.info(f"[{target.alias}] {step.subject}: building ...")
        target.check(step.command, step.what, stream=stream_to(report, target.alias, "build: "))
    elif step.failure:
        result = target.run(step.command, what=step.what)
        if result.failed:
            last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:]
            raise RemoteError(f"{target.alias}: {step.failure} ({' '.join(last) or 'no output'})")
    else:
        target.check(step.command, step.what or step.subject)


def check(target: Target, report: Report, step: Step) -> None:
    """A step that proves something: each line it prints is an "ok" line (or, if it
    prints none, the step's ``unchanged`` text)."""
    if step.failure:
        result = target.run(step.command, what=step.what)
        if result.failed:
            raise RemoteError(f"{target.alias}: {step.failure}:\n{result.stderr.strip()}")
    else:
        result = target.check(step.command, step.what)
    for line in result.stdout.strip().splitlines() or [step.unchanged]:
        report.ok(target.alias, step.subject, line)


def stream_to(report: Report, alias: str, prefix: str) -> Callable[[str], None]:
    return lambda line: report.info(f"[{alias}]   {prefix}{line}")


def show_diffs(target: Target, report: Report, changed: list[Upload], facts: DeployFacts) -> None:
    """For a dry run: a unified diff of each changed non-secret file."""
    for upload in changed:
        if upload.mode & 0o077 != 0o044 or upload.path not in facts.files:
            continue
        old = target.run(commands.read_file(upload.path), what=f"reading {upload.path}").stdout
        diff = difflib.unified_diff(
            old.splitlines(keepends=True),
            upload.content.decode().splitlines(keepends=True),
            f"{target.alias}:{upload.path}",
            f"wanted:{upload.path}",
        )
        report.info("".join(diff).rstrip())


@task(
    role="registry",
    help={
        "dry-run": "Connect, read facts and show what would change; change nothing.",
        "parallel": "Every host at once, not one after another; refused where a "
        "container would be recreated (new certificates, users and settings only).",
        "force": "Act on -H hosts whose inventory role is not registry.",
        "ship-images": "Carry the pinned images a host lacks over SSH (docker save here, "
        "docker load there), for hosts that cannot pull them.",
        "images-from": "With --ship-images: take the images from this inventory host's "
        "Docker, not this machine's.",
    },
)
def deploy(
    c: Context,
    dry_run: bool = False,
    parallel: bool = False,
    force: bool = False,
    ship_images: bool = False,
    images_from: str = "",
) -> None:
    """Deploy the registry and its TLS proxy to the registry host(s), then prove it."""
    inv = inventory.load()
    aliases = hosts_for(c, inv, "registry", "deploy", force)
    with image_source(c, inv, ship_images or bool(images_from), images_from) as source:
        deploy_all(c, inv, aliases, Report(), dry_run, parallel, source)


@contextmanager
def image_source(
    c: Context, inv: Inventory, wanted_: bool, host: str
) -> Iterator[ship.ImageSource | None]:
    """Where ``--ship-images`` takes images from: ``host``'s Docker, connected for the
    whole deploy, or this machine's; None without it."""
    if not wanted_:
        yield None
    elif not host:
        yield ship.LocalDocker()
    else:
        inv.host(host)
        target = open_target(inv, host, c)
        try:
            yield ship.HostDocker(target)
        finally:
            target.conn.close()


def deploy_all(
    c: Context,
    inv: Inventory,
    aliases: list[str],
    report: Report,
    dry_run: bool = False,
    parallel: bool = False,
    source: ship.ImageSource | None = None,
) -> None:
    """Deploy to ``aliases``, one at a time, each proven before the next (a roll); or
    with ``parallel``, all at once where no container is recreated. ``source``: where
    the images hosts lack come from (``--ship-images``)."""
    ensure_local(inv, report, dry_run)

    files = wanted.registry_files(inv)
    first: list[str] = []

    def work(target: Target) -> None:
        start = time.monotonic()
        if dry_run:
            deploy_host(inv, target, report, True, files=files, source=source)
        else:
            facts_script = deploy_facts.facts_script(inv, files)
            with host_lock(target, "deploy", facts_script) as facts:
                plan = deploy_host(inv, target, report, False, facts, files, parallel, source)
            if plan.registry.why == "created":
                first.append(target.alias)
        took = time.monotonic() - start
        report.info(f"[{target.alias}] done in {took:.1f} s, {target.commands} SSH commands")

    # A rolling deploy: one host at a time, each proven by its own push and pull; the
    # first failure stops the roll with the hosts after it still serving.
    each_host(c, inv, aliases, report, "deploy", work, parallel=parallel, rolling=not parallel)
    ca = pki.read_cert(pki.paths(inv).ca_cert)
    report.info(f"registry: {inv.registry.url}")
    report.info(f"CA SHA-256 fingerprint: {certificates.fingerprint(ca)}")
    if first:
        report.info("next: make Docker hosts trust it with 'fab -H <client> trust-ca'")


def undeploy_host(
    inv: Inventory,
    target: Target,
    report: Report,
    purge_data: bool,
    dry_run: bool = False,
    keep_config: bool = False,
) -> None:
    """Remove the containers, networks, images, configuration and secrets; the data only
    with ``purge_data``; say what was kept."""
    alias = target.alias
    output = target.check(undeploy_planner.facts_script(inv), "reading the host").stdout
    facts = undeploy_planner.parse_facts(output)
    plan = undeploy_planner.plan(inv, facts, purge_data, keep_config)
    if not dry_run:
        for what, command in plan.commands():
            target.check(command, what)
    report_undeploy(inv, alias, report, plan, " (dry run)" if dry_run else "")


def report_undeploy(
    inv: Inventory, alias: str, report: Report, plan: undeploy_planner.UndeployPlan, suffix: str
) -> None:
    """One line per thing undeploy removed, and per thing it kept (and why)."""
    for container in plan.containers:
        report.changed(alias, f"container {container}", "removed" + suffix)
    for network in plan.networks:
        report.changed(alias, f"network {network}", "removed" + suffix)
    if not plan.containers:
        report.unchanged(alias, "containers", "none were running")
    for image in plan.images:
        report.changed(alias, f"image {image}", "removed" + suffix)
    if plan.self_name:
        report.changed(alias, f"name {inv.registry.domain}", "removed from /etc/hosts" + suffix)
    holds = ("configuration and secrets (server key, token key, probe password)",
             "Docker's trust of the registry")  # fmt: skip
    for path, what in zip(undeploy_planner.config_paths(inv), holds, strict=True):
        if path in plan.config:
            report.changed(alias, f"config {path}", f"removed{suffix}: {what}")
    for path in plan.purge:
        report.changed(alias, f"data {path}", "deleted" + suffix)
    data = undeploy_planner.data_paths(inv)
    for path in plan.kept:
        if path in data:
            report.unchanged(alias, f"data {path}", "kept (--purge-data deletes it)")
        else:
            report.unchanged(alias, f"config {path}", "kept (--keep-config)")


@task(
    role="registry",
    help={
        "purge-data": "Also delete the registry's data: every pushed image (and the mirror's "
        "cache).",
        "keep-config": "Keep /etc/regkit (configuration and secrets) and Docker's trust of the "
        "registry on the host.",
        "yes": "Do not ask for confirmation of --purge-data.",
        "dry-run": "Read each host and say what would be removed; remove nothing.",
        "force": "Act on -H hosts whose inventory role is not registry.",
    },
)
def undeploy(
    c: Context,
    purge_data: bool = False,
    yes: bool = False,
    dry_run: bool = False,
    force: bool = False,
    keep_config: bool = False,
) -> None:
    """Remove the registry and its secrets from the host(s); keep pushed images unless told."""
    inv = inventory.load()
    aliases = hosts_for(c, inv, "registry", "undeploy", force)
    report = Report()
    if purge_data and not yes and not dry_run:
        if not sys.stdin.isatty():
            raise RegkitError("--purge-data needs confirmation: add --yes when not at a terminal")
        answer = input(
            f"Delete every pushed image in {inv.registry.data_dir} on {', '.join(aliases)}? "
            "Type 'purge' to confirm: "
        )
        if answer.strip() != "purge":
            raise RegkitError("not confirmed; nothing was changed")

    def work(target: Target) -> None:
        with host_lock(target, "undeploy"):
            undeploy_host(inv, target, report, purge_data, dry_run, keep_config)

    each_host(c, inv, aliases, report, "undeploy", work)


ns = Collection("deploy", deploy, undeploy)
