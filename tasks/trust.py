"""``fab trust-ca``: every host trusts the registry's CA, in each runtime it has.

Docker (boot2docker included), containerd and podman/buildah/skopeo, and the
system store. Per host, in parallel: read the facts, build the plan
(:mod:`tasks.plans.trust`), apply it (``--dry-run`` says what it would change),
then check that ``https://<domain>/_ping`` verifies with the system store alone.
"""

from __future__ import annotations

import getpass
import time

from invoke import Collection, Context

from tasks import certificates, commands, inventory, logins, mirror_trust, pki
from tasks.cli import read_secret_stdin, task
from tasks.errors import RegkitError
from tasks.inventory import Inventory
from tasks.plans import runtimes
from tasks.plans import trust as planner
from tasks.plans.trust import BUNDLES, TrustFacts, TrustPlan
from tasks.remote.fanout import each_host, hosts_for
from tasks.remote.target import Target
from tasks.report import Report


def read_facts(inv: Inventory, target: Target, pems: list[bytes]) -> tuple[str, TrustFacts]:
    """The host's flavor and trust facts: one command, two when containerd's CRI reads
    hosts.toml files from a folder of its own choosing."""
    output = target.check(planner.facts_script(inv, pems), "reading facts").stdout
    facts = planner.parse_facts(output)
    hosts_dir = runtimes.hosts_dir(facts.containerd_config)
    if facts.containerd and hosts_dir != runtimes.CONTAINERD_HOSTS:
        script = planner.facts_script(inv, pems, hosts_dir)
        facts = planner.parse_facts(target.check(script, "reading facts").stdout)
    return planner.detect_flavor(target.spec.flavor, facts), facts


def apply(
    inv: Inventory,
    target: Target,
    report: Report,
    plan: TrustPlan,
    facts: TrustFacts,
    bundle: bytes,
    dry_run: bool,
) -> None:
    """Carry out ``plan`` (unless ``dry_run``) and report each step."""
    alias, flavor = target.alias, plan.flavor
    suffix = " (dry run)" if dry_run else ""
    if plan.restart_containerd and not dry_run:
        keep = commands.keep_previous(runtimes.CONTAINERD_CONFIG, planner.PREVIOUS_CONFIG)
        target.check(keep, "keeping containerd's config.toml")
    if plan.uploads and not dry_run:
        target.upload(plan.uploads)
    for upload in plan.uploads:
        why = "new" if upload.path not in facts.files else "replaced"
        report.changed(alias, f"file {upload.path}", why + suffix)
    if plan.remove:
        # The folders named after the registry (certs.d/<address>), once they are empty.
        parents = dict.fromkeys(path.rsplit("/", 1)[0] for path in plan.remove)
        folders = [f for f in parents if f.endswith(f"/{inv.registry.address}")]
        if not dry_run:
            target.check(commands.remove_files(plan.remove, folders), "removing CA files")
        why = "removed (a CA no longer trusted)" if bundle else "removed"
        for path in plan.remove:
            report.changed(alias, f"file {path}", why + suffix)
    if plan.system_changed:
        if not dry_run:
            store = planner.store_script(inv, flavor, facts, bundle)
            target.check(store, f"updating the {flavor} CA store")
        count = len(planner.split_pems(bundle))
        what = "CA removed" if not count else "CA trusted"
        if count > 1:
            what = f"{count} CAs trusted (rotation under way)"
        report.changed(alias, f"system CA store ({flavor})", what + suffix)
    if plan.restart_containerd:
        restart_containerd(target, report, plan, facts, dry_run)
    if plan.restart_docker:
        restart_docker(target, report, plan, facts, dry_run)


def restart_containerd(
    target: Target, report: Report, plan: TrustPlan, facts: TrustFacts, dry_run: bool
) -> None:
    """Restart containerd so its CRI reads the new config_path; say so, and what else, first."""
    assert plan.containerd is not None
    why = plan.containerd.why
    also = "; Docker runs on it and reconnects" if facts.docker_on_containerd else ""
    note = f"{why}; running containers keep running (their shims outlive it){also}"
    if dry_run:
        report.changed(target.alias, "containerd", f"would restart: {note} (dry run)")
        return
    report.info(f"[{target.alias}] restarting containerd: {note}")
    start = time.monotonic()
    target.check(planner.restart_containerd_script(facts), "restarting containerd")
    took = time.monotonic() - start
    report.changed(target.alias, "containerd", f"restarted in {took:.1f} s: {why}")


def report_runtimes(target: Target, report: Report, plan: TrustPlan, dry_run: bool) -> None:
    """One line per runtime on the host: where it reads the CA, and whether that changed."""
    suffix = " (dry run)" if dry_run else ""
    for runtime in plan.runtimes:
        step = f"{runtime.name} trust"
        where = f"{runtime.path}, {runtime.read}"
        if runtime.name == "containerd" and plan.containerd:
            where += f"; {plan.containerd.why}"
        if plan.runtime_changed(runtime):
            report.changed(target.alias, step, f"configured: {where}{suffix}")
        else:
            report.unchanged(target.alias, step, where)


def restart_docker(
    target: Target, report: Report, plan: TrustPlan, facts: TrustFacts, dry_run: bool
) -> None:
    """Restart dockerd so it reads the new system store; say so first."""
    note = "" if plan.live_restore else "; running containers restart with it"
    if dry_run:
        report.changed(target.alias, "docker daemon", f"would restart{note} (dry run)")
        return
    report.info(f"[{target.alias}] restarting the Docker daemon to load the system store{note}")
    start = time.monotonic()
    target.check(planner.restart_script(plan.flavor, facts), "restarting docker")
    report.changed(target.alias, "docker daemon", f"restarted in {time.monotonic() - start:.1f} s")


def trust_host(
    inv: Inventory,
    target: Target,
    report: Report,
    login: tuple[str, str] | None,
    dry_run: bool = False,
    mirror: bool = False,
    login_user: str = "",
) -> TrustPlan:
    pems = [certificates.cert_pem(ca) for ca in pki.trusted_cas(inv)]
    bundle = b"".join(pems)
    flavor, facts = read_facts(inv, target, pems)
    plan = planner.plan(inv, flavor, facts, pems)
    apply(inv, target, report, plan, facts, bundle, dry_run)
    if not plan.system_changed:
        report.unchanged(target.alias, f"system CA store ({flavor})", "CA present once")
    report_runtimes(target, report, plan, dry_run)
    if mirror:
        mirror_trust.ensure(inv, target, report, facts, flavor, dry_run)
    if dry_run:
        return plan
    system_bundle = facts.bundle or BUNDLES[0]
    verify = planner.verify_script(inv, bundle, system_bundle, plan.runtimes)
    proof = target.check(verify, "verifying trust")
    report.ok(target.alias, "verify", proof.stdout.strip())
    if login:
        logins.ensure(inv, target, report, plan, facts, *login, login_user)
    return plan


def untrust_host(
    inv: Inventory, target: Target, report: Report, dry_run: bool = False, mirror: bool = False
) -> None:
    """Undo trust-ca on the host; with ``mirror``, only what --mirror added."""
    pems = [certificates.cert_pem(ca) for ca in pki.trusted_cas(inv)]
    flavor, facts = read_facts(inv, target, pems)
    mirror_trust.remove(inv, target, report, facts, dry_run)
    if mirror:
        return
    logins.remove(inv, target, report, facts, dry_run)
    plan = planner.untrust_plan(inv, flavor, facts)
    apply(inv, target, report, plan, facts, b"", dry_run)
    if not plan.changes:
        report.unchanged(target.alias, "trust", "this CA was not installed")


@task(
    name="trust-ca",
    role="client",
    help={
        "login": "Also log each runtime on each host in as this registry user (Docker: "
        "root's config, or --login-user's).",
        "login-user": "With --login: log this local user's Docker in, not root's.",
        "password-stdin": "With --login: read the password from standard input.",
        "dry-run": "Read each host and say what would change; change nothing.",
        "force": "Act on -H hosts whose inventory role is not client.",
        "mirror": "Also pull Docker Hub's images through the registry's mirror "
        "(registry.mirror): Docker, containerd and podman.",
    },
)
def trust_ca(
    c: Context,
    login: str = "",
    password_stdin: bool = False,
    dry_run: bool = False,
    force: bool = False,
    mirror: bool = False,
    login_user: str = "",
) -> None:
    """Make hosts trust the registry's CA: Docker, containerd, podman (default: every client)."""
    inv = inventory.load()
    aliases = hosts_for(c, inv, "client", "trust-ca", force)
    pki.read_cert(pki.paths(inv).ca_cert)
    credentials = None
    if login:
        password = read_secret_stdin("password") if password_stdin else getpass.getpass()
        credentials = (login, password)
    report = Report()
    each_host(
        c,
        inv,
        aliases,
        report,
        "trust-ca",
        lambda target: trust_host(inv, target, report, credentials, dry_run, mirror, login_user),
        step="trust",
        parallel=True,
    )


@task(
    name="untrust-ca",
    role="client",
    help={
        "dry-run": "Read each host and say what would change; change nothing.",
        "force": "Act on -H hosts whose inventory role is not client.",
        "mirror": "Only stop pulling through the mirror; keep trusting the registry's CA.",
    },
)
def untrust_ca(
    c: Context, dry_run: bool = False, force: bool = False, mirror: bool = False
) -> None:
    """Remove what trust-ca installed; restart Docker only where the system store changed."""
    inv = inventory.load()
    if mirror and inv.registry.mirror is None:
        raise RegkitError(f"{inv.source}: --mirror, but registry.mirror is not set")
    aliases = hosts_for(c, inv, "client", "untrust-ca", force)
    pki.read_cert(pki.paths(inv).ca_cert)
    report = Report()
    each_host(
        c,
        inv,
        aliases,
        report,
        "untrust-ca",
        lambda target: untrust_host(inv, target, report, dry_run, mirror),
        step="trust",
        parallel=True,
    )


ns = Collection("trust", trust_ca, untrust_ca)
