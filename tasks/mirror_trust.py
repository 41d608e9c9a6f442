"""``trust-ca --mirror`` and its undoing in ``untrust-ca``, on one connected host.

Reads the host's mirror settings (one command), builds the plan
(:mod:`tasks.plans.mirror_trust`), applies it: the files, then daemon.json and
dockerd's reload, said before it happens; then proves the mirror answers this host's
client certificate.
"""

from __future__ import annotations

from tasks import commands, mirror, pki, scripts
from tasks.errors import RegkitError
from tasks.inventory import Inventory
from tasks.plans import mirror_trust as planner
from tasks.plans import runtimes
from tasks.plans.mirror_trust import DAEMON_JSON, MirrorFacts, MirrorPlan, RuntimeMirror
from tasks.plans.trust import TrustFacts
from tasks.remote.target import Target
from tasks.remote.upload import Upload
from tasks.report import Report

PREVIOUS = f"{DAEMON_JSON}.regkit-previous"
B2D = "boot2docker keeps /etc/docker in RAM: a mirror set there would be gone after its reboot"


def runtimes_on(inv: Inventory, trust: TrustFacts) -> list[RuntimeMirror]:
    """The host's runtimes, as trust-ca found them."""
    hosts_dir = runtimes.hosts_dir(trust.containerd_config)
    return planner.runtimes_of(inv, trust.docker, trust.containerd, trust.containers, hosts_dir)


def read_facts(target: Target, rts: list[RuntimeMirror]) -> MirrorFacts:
    output = target.check(planner.facts_script(rts), "reading the mirror settings").stdout
    return planner.parse_facts(output)


def current_client(
    inv: Inventory, alias: str, rts: list[RuntimeMirror], facts: MirrorFacts
) -> bool:
    """Whether every runtime has this host's client pair, the certificate still current."""
    return all(
        rt.key in facts.files
        and rt.cert in facts.certs
        and mirror.client_current(inv, alias, facts.certs[rt.cert])
        for rt in rts
    )


def ensure(
    inv: Inventory, target: Target, report: Report, trust: TrustFacts, flavor: str, dry_run: bool
) -> None:
    """Point every runtime on the host at the mirror (``trust-ca --mirror``)."""
    alias = target.alias
    if inv.registry.mirror is None:
        raise RegkitError(
            f"{inv.source}: --mirror, but registry.mirror is not set; add it and deploy first"
        )
    if flavor == "boot2docker":
        report.skipped(alias, "mirror", B2D)
        return
    rts = runtimes_on(inv, trust)
    if not rts:
        report.skipped(alias, "mirror", "no container runtime found")
        return
    facts = read_facts(target, rts)
    client = None if current_client(inv, alias, rts, facts) else mirror.issue_client(inv, alias)
    plan = planner.plan(inv, rts, facts, pki.trust_bundle(inv), client)
    apply(inv, target, report, plan, dry_run)
    report_runtimes(inv, target, report, rts, plan, client is not None, dry_run)
    if not dry_run:
        proof = target.check(verify_script(inv, rts[0]), "verifying the mirror")
        report.ok(alias, "mirror", proof.stdout.strip())


def remove(
    inv: Inventory, target: Target, report: Report, trust: TrustFacts, dry_run: bool
) -> None:
    """Undo ``trust-ca --mirror`` (``untrust-ca``); nothing to do without a mirror."""
    if inv.registry.mirror is None:
        return
    rts = runtimes_on(inv, trust)
    if not rts:
        return
    plan = planner.untrust_plan(inv, rts, read_facts(target, rts))
    apply(inv, target, report, plan, dry_run)
    if not plan.changes:
        report.unchanged(target.alias, "mirror", "no runtime was pointed at it")


def apply(inv: Inventory, target: Target, report: Report, plan: MirrorPlan, dry_run: bool) -> None:
    """Files first when adding (the mirror is never named without its certificates),
    daemon.json first when removing (nothing is left naming removed certificates)."""
    if plan.uploads and not dry_run:
        target.upload(plan.uploads)
    reload_docker(inv, target, report, plan, dry_run)
    if plan.remove:
        folders = sorted({p.rsplit("/", 1)[0] for p in plan.remove if "/certs.d/" in p})
        if not dry_run:
            target.check(commands.remove_files(plan.remove, folders), "removing the mirror's files")
        for path in plan.remove:
            report.changed(
                target.alias, f"file {path}", "removed" + (" (dry run)" if dry_run else "")
            )


def reload_docker(
    inv: Inventory, target: Target, report: Report, plan: MirrorPlan, dry_run: bool
) -> None:
    """Write daemon.json and have dockerd read it (SIGHUP); say so first (see
    :func:`tasks.plans.mirror_trust.reload_text` for a key, or a file, that goes)."""
    if plan.daemon_json is None:
        return
    alias, what = target.alias, f"registry-mirrors in {DAEMON_JSON}"
    if dry_run:
        report.changed(alias, "docker daemon", f"would reload: {what} (dry run)")
        return
    report.info(
        f"[{alias}] reloading the Docker daemon (SIGHUP: it reads {what} again; "
        "running containers are not touched)"
    )
    target.check(commands.keep_previous(DAEMON_JSON, PREVIOUS), f"keeping {DAEMON_JSON}")
    reloaded = planner.reload_text(plan.daemon_json)
    target.upload([Upload(DAEMON_JSON, reloaded.encode())])
    want = planner.names_mirror(plan.daemon_json, inv.registry.mirror_url)
    target.check(reload_script(inv, want), "reloading dockerd")
    if not plan.daemon_json:
        target.check(commands.join("rm", "-f", DAEMON_JSON), f"removing {DAEMON_JSON}")
    elif reloaded != plan.daemon_json:
        target.upload([Upload(DAEMON_JSON, plan.daemon_json.encode())])
    report.changed(alias, "docker daemon", f"reloaded: {what}")


def report_runtimes(
    inv: Inventory,
    target: Target,
    report: Report,
    rts: list[RuntimeMirror],
    plan: MirrorPlan,
    new_client: bool,
    dry_run: bool,
) -> None:
    """One line per runtime: what names the mirror, and whether that changed."""
    suffix = " (dry run)" if dry_run else ""
    placed = {u.path for u in plan.uploads}
    for rt in rts:
        url = inv.registry.mirror_url
        where = f"{rt.config} names {url}; client certificate in {rt.folder}"
        changed = {rt.ca, rt.cert, rt.key, rt.config} & placed
        if rt.config == DAEMON_JSON and plan.daemon_json is not None:
            changed = {rt.config}
        if changed:
            why = "configured" + (", new client certificate" if new_client else "")
            report.changed(target.alias, f"{rt.name} mirror", f"{why}: {where}{suffix}")
        else:
            report.unchanged(target.alias, f"{rt.name} mirror", where)


def reload_script(inv: Inventory, want: bool) -> str:
    return scripts.script(
        "docker-mirrors",
        address=inv.registry.mirror_address,
        want=want,
        previous=PREVIOUS,
        daemon_json=DAEMON_JSON,
    )


def verify_script(inv: Inventory, rt: RuntimeMirror) -> str:
    """The mirror answers this host's client certificate (curl, where the host has it)."""
    return scripts.script(
        "mirror-trust-verify",
        url=inv.registry.mirror_url,
        ca=rt.ca,
        cert=rt.cert,
        key=rt.key,
    )
