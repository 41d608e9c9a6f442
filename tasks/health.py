"""``fab -H regbox status`` and ``check-expiry``: how the registry is doing, read-only.

The certificate checked is the one the host actually serves (read with openssl on
the host), next to the local CA: an expired CA or server certificate must be
found before pushes start failing.
"""

from __future__ import annotations

import datetime as dt
import json

from cryptography import x509
from invoke import Collection, Context

from tasks import certificates, inventory, pki, scripts, storage, users
from tasks.cli import task
from tasks.errors import RemoteError
from tasks.facts import parse_values
from tasks.inventory import Inventory
from tasks.inventory_storage import S3
from tasks.layout import (
    AUTH_FILE,
    CA_FILE,
    MIRROR,
    MIRROR_DEBUG,
    NGINX,
    PROBE_PASSWORD_FILE,
    PROBE_REPO,
    PRUNED,
    REGISTRY,
    S3_CA_FILE,
    TOKEND,
)
from tasks.remote.fanout import each_host, hosts_for
from tasks.remote.target import Target
from tasks.remote.upload import sha256
from tasks.report import Report, human_size


def served_script(inv: Inventory) -> str:
    """Emit ``served``: the end date and serial of the certificate the host serves."""
    reg = inv.registry
    return scripts.script("served-certificate", port=reg.port, domain=reg.domain)


def status_script(inv: Inventory) -> str:
    """Read-only: containers, health, the served certificate, users file, disk, catalog."""
    reg = inv.registry
    return scripts.script(
        "status",
        containers=[REGISTRY, NGINX, TOKEND, *([MIRROR] if reg.mirror else [])],
        container_format="{{.State.Status}}|{{.State.StartedAt}}|{{.Config.Image}}|{{.RestartCount}}",
        auth_file=AUTH_FILE,
        pruned=PRUNED,
        data_dir=reg.data_dir,
        port=reg.port,
        domain=reg.domain,
        password_file=PROBE_PASSWORD_FILE,
        ca=CA_FILE,
        url=reg.url,
        service=reg.domain,
        user=users.PROBE_USER,
        s3_endpoint=reg.storage.s3.endpoint if reg.storage.s3 else "",
        s3_ca=S3_CA_FILE if reg.storage.s3 and reg.storage.s3.ca_file else "",
        mirror_dir=reg.mirror.data_dir if reg.mirror else "",
        mirror=MIRROR,
        mirror_debug=MIRROR_DEBUG,
    )


# The containers every deployed registry host runs.
CORE = (REGISTRY, NGINX, TOKEND)


def served_certificate(value: str) -> tuple[dt.datetime, str] | None:
    """(not after, serial) from ``notAfter=...;serial=...;``, or None (pure; unit-tested)."""
    fields = dict(part.split("=", 1) for part in value.split(";") if "=" in part)
    if "notAfter" not in fields:
        return None
    try:
        not_after = dt.datetime.strptime(fields["notAfter"], "%b %d %H:%M:%S %Y %Z")
    except ValueError:
        return None
    return not_after.replace(tzinfo=dt.UTC), fields.get("serial", "")


def expiry_problems(
    ca: x509.Certificate, served: tuple[dt.datetime, str] | None, warn: int
) -> list[str]:
    """What expires within ``warn`` days (or is not served at all), as sentences."""
    problems = []
    ca_left = certificates.days_left(ca)
    if ca_left < warn:
        problems.append(f"the CA expires in {ca_left} days (under {warn})")
    if served is None:
        problems.append("no certificate is served (is the proxy running?)")
    else:
        left = (served[0] - dt.datetime.now(dt.UTC)).days
        if left < warn:
            problems.append(
                f"the served certificate expires in {left} days (under {warn}); "
                "run 'invoke pki.renew' then 'fab deploy'"
            )
    return problems


def status_lines(values: dict[str, str], s3: S3 | None = None) -> list[str]:
    """Readable lines from the status script's output (pure; unit-tested); ``s3`` is
    where the registry keeps its data, if in a bucket."""
    lines = []
    for name in (*CORE, *([MIRROR] if f"ctr:{MIRROR}" in values else [])):
        state, started, image, restarts = (
            values.get(f"ctr:{name}", "missing").split("|") + [""] * 3
        )[:4]
        detail = f", since {started[:19]}Z, {image}, {restarts} restarts" if started else ""
        lines.append(f"{name}: {state}{detail}")
    lines.append(f"health: /_ping answered {values.get('ping') or 'nothing'}")
    served = served_certificate(values.get("served", ""))
    if served:
        left = (served[0] - dt.datetime.now(dt.UTC)).days
        lines.append(f"served certificate: serial {served[1]}, {left} days left")
    try:
        names = json.loads(values.get("catalog", "")).get("repositories") or []
        repos = len([name for name in names if name != PROBE_REPO])
        catalog = f"{repos}{'+' if repos == 1000 else ''} repositories"
    except (ValueError, AttributeError):
        catalog = "unknown"
    if s3:
        lines.append(f"storage: bucket {s3.bucket} at {s3.endpoint}: {bucket_state(values)}")
        lines.append(f"catalog: {catalog}")
    else:
        lines.append(f"registry data: {values.get('disk') or 'none yet'}; catalog: {catalog}")
    space = free_space(values)
    if space:
        lines.append(f"disk: {mib(space[0])} free of {mib(space[1])}")
    lines.append(f"prune: {last_prune(values.get('pruned', ''))}")
    if "mirror_disk" in values:
        lines.append(mirror_line(values))
    return lines


def mirror_line(values: dict[str, str]) -> str:
    """The mirror's cache and what it served since it started (pure; unit-tested).

    distribution counts every blob or manifest it serves (``Requests``) and each one it
    had to fetch from the upstream first (``Misses``)."""
    disk = values.get("mirror_disk") or "empty"
    try:
        proxy = json.loads(values.get("mirror_vars", ""))["registry"]["proxy"]
        counts = [
            f"{kind}: {proxy[kind]['Requests']} served, {proxy[kind]['Misses']} fetched "
            "from the upstream"
            for kind in ("manifests", "blobs")
        ]
    except (ValueError, KeyError, TypeError):
        return f"mirror: cache {disk} on disk; its counters did not answer"
    return f"mirror: cache {disk} on disk; since it started, {'; '.join(counts)}"


def bucket_state(values: dict[str, str]) -> str:
    """How the bucket looks from the host and from its registry (pure; unit-tested)."""
    answer = values.get("s3", "")
    if answer in ("", "000"):
        reach = "no answer to this host"
    else:
        reach = f"answers HTTP {answer}" if answer.isdigit() else answer
    v2 = values.get("v2", "")
    if v2 == "200":
        return f"{reach}; the registry reads it (/v2/ 200)"
    if v2 == "503":
        return f"{reach}; FAILING: the registry's storage check fails (/v2/ answered 503)"
    return f"{reach}; the registry's view unknown (/v2/ answered {v2 or 'nothing'})"


def deployed_here(values: dict[str, str]) -> bool:
    """Whether any of regkit's containers is on the host (pure)."""
    return any(values.get(f"ctr:{name}", "missing") != "missing" for name in CORE)


def not_serving(values: dict[str, str]) -> str:
    """Why a deployed host does not serve, in a few words (pure)."""
    down = [name for name in CORE if not values.get(f"ctr:{name}", "").startswith("running")]
    ping, v2 = values.get("ping") or "nothing", values.get("v2") or "nothing"
    parts = [f"{', '.join(down)} not running"] if down else []
    return "; ".join([*parts, f"/_ping answered {ping}, /v2/ with a token {v2}"])


def serving(values: dict[str, str]) -> bool:
    """Whether the host serves: its proxy, token service and registry answer (pure)."""
    return values.get("ping") == "200" and values.get("v2") == "200"


def last_prune(value: str) -> str:
    """When prune last ran and what it freed, from the host's record (pure; unit-tested)."""
    if not value:
        return "never ran on this host"
    try:
        run = json.loads(value)
        when = run["finished"].replace("T", " ")
        deleted, moved, freed = run["manifests_deleted"], run["kept_moved"], run["freed_kib"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"unreadable record in {PRUNED}"
    kept = f", {moved} kept (a push landed)" if moved else ""
    return f"last ran {when}: {deleted} manifests deleted{kept}, {human_size(freed * 1024)} freed"


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB" if kib < 10 * 1024 * 1024 else f"{kib / 1024 / 1024:.0f} GiB"


def free_space(values: dict[str, str]) -> tuple[int, int] | None:
    """(free, size) in KiB of the file system under the registry's data, if known."""
    try:
        free, size = (int(x) for x in values.get("space", "").split())
    except ValueError:
        return None
    return free, size


# Below this share of the disk free, status warns: pushes fail when it is full.
LOW_SPACE = 0.10


def disk_problems(values: dict[str, str], data_dir: str) -> list[str]:
    """Warnings about the disk under ``data_dir`` (pure; unit-tested)."""
    space = free_space(values)
    if not space or not space[1]:
        return []
    free, size = space
    what = f"{mib(free)} free of {mib(size)} under {data_dir}"
    todo = "free space there, or delete tags and run 'fab gc'"
    if free < 1024:
        return [f"the registry's disk is full ({what}): pushes fail; {todo}"]
    if free < size * LOW_SPACE:
        return [f"the registry's disk is nearly full ({what}); {todo}"]
    return []


@task(role="registry", help={"force": "Act on -H hosts whose inventory role is not registry."})
def status(c: Context, force: bool = False) -> None:
    """Show the registry host(s): containers, health, certificates, users, disk, catalog."""
    inv = inventory.load()
    aliases = hosts_for(c, inv, "registry", "status", force)
    report = Report()
    ca = pki.read_cert(pki.paths(inv).ca_cert)
    local_users = sorted(users.load(inv).users())
    deployed = local_users and users.has_probe_credential(inv)
    wanted_auth = sha256(users.deployed_htpasswd(inv)) if deployed else ""

    s3 = inv.registry.storage.s3
    replicas = [alias for alias in storage.sharing(inv) if alias in aliases]
    healthy: list[str] = []

    unhealthy: list[str] = []

    def work(target: Target) -> None:
        alias = target.alias
        values = parse_values(target.check(status_script(inv), "reading status").stdout)
        if not deployed_here(values):
            why = f"not deployed: no regkit container on this host ('fab -H {alias} deploy')"
            report.skipped(alias, "status", why)
            return
        if serving(values):
            healthy.append(alias)
        for line in status_lines(values, s3):
            report.info(f"[{alias}] {line}")
        report.info(f"[{alias}] CA: {certificates.days_left(ca)} days left")
        served = served_certificate(values.get("served", ""))
        for problem in expiry_problems(ca, served, inv.pki.warn_days):
            report.info(f"[{alias}] WARNING: {problem}")
        for problem in disk_problems(values, inv.registry.data_dir):
            report.info(f"[{alias}] WARNING: {problem}")
        drift = "" if values.get("htpasswd") == wanted_auth else " (host differs: run deploy)"
        report.info(f"[{alias}] users: {', '.join(local_users) or 'none'}{drift}")
        if alias in healthy:
            report.ok(alias, "status", "serving")
        else:
            unhealthy.append(alias)
            report.failed(alias, "status", f"deployed, but not serving: {not_serving(values)}")

    each_host(c, inv, aliases, report, "status", work)
    if replicas and s3:
        down = [alias for alias in replicas if alias not in healthy]
        serve = f"{len(replicas) - len(down)} of {len(replicas)} registry hosts serve"
        if down:
            report.info(f"replicas: WARNING: {serve} bucket {s3.bucket}; not: {', '.join(down)}")
        else:
            report.info(f"replicas: {serve} bucket {s3.bucket}")
    if unhealthy:
        raise RemoteError(f"not serving: {', '.join(unhealthy)} (see the lines above)")


@task(
    name="check-expiry",
    role="registry",
    help={"force": "Act on -H hosts whose inventory role is not registry."},
)
def check_expiry(c: Context, force: bool = False) -> None:
    """Exit non-zero if the CA or a served certificate expires within pki.warn_days (cron/CI)."""
    inv = inventory.load()
    aliases = hosts_for(c, inv, "registry", "check-expiry", force)
    ca = pki.read_cert(pki.paths(inv).ca_cert)
    report = Report()
    days = inv.pki.warn_days

    def work(target: Target) -> None:
        output = target.check(served_script(inv), "reading certificates").stdout
        served = served_certificate(parse_values(output).get("served", ""))
        problems = expiry_problems(ca, served, days)
        if problems:
            raise RemoteError(f"{target.alias}: {'; '.join(problems)}")
        report.ok(target.alias, "expiry", f"CA and served certificate valid for {days}+ days")

    each_host(c, inv, aliases, report, "check-expiry", work, step="expiry")


ns = Collection("health", status, check_expiry)
