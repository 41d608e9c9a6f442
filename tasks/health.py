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

from tasks import inventory, pki, users
from tasks.cli import task
from tasks.errors import RegkitError, RemoteError
from tasks.inventory import Inventory
from tasks.layout import AUTH_FILE, CA_FILE, NGINX, PROBE_PASSWORD_FILE, REGISTRY
from tasks.remote import EMIT, aliases_from, open_target, parse_values, q, sha256
from tasks.report import Report


def served_script(inv: Inventory) -> str:
    """Emit ``served``: the end date and serial of the certificate the host serves."""
    reg = inv.registry
    return (
        f'emit served "$(openssl s_client -connect 127.0.0.1:{reg.port} '
        f"-servername {q(reg.domain)} </dev/null 2>/dev/null "
        "| openssl x509 -noout -enddate -serial 2>/dev/null | tr '\\n' ';')\""
    )


def status_script(inv: Inventory) -> str:
    """Read-only: containers, health, the served certificate, users file, disk, catalog."""
    reg = inv.registry
    fmt = "{{.State.Status}}|{{.State.StartedAt}}|{{.Config.Image}}|{{.RestartCount}}"
    pw = PROBE_PASSWORD_FILE
    url = reg.url
    return f"""{EMIT}
for c in {REGISTRY} {NGINX}; do
  emit "ctr:$c" "$(docker inspect --format {q(fmt)} "$c" 2>/dev/null || echo missing)"
done
auth={AUTH_FILE}
[ -f "$auth" ] && emit htpasswd "$(sha256sum < "$auth" | cut -d' ' -f1)"
emit disk "$(du -sh {q(reg.data_dir)} 2>/dev/null | cut -f1)"
d={q(reg.data_dir)}; [ -d "$d" ] || d=$(dirname "$d")
emit space "$(df -Pk "$d" 2>/dev/null | awk 'NR==2 {{print $4, $2}}')"
{served_script(inv)}
if command -v curl >/dev/null 2>&1 && [ -f {pw} ]; then
  emit ping "$(curl -s -o /dev/null -w '%{{http_code}}' --cacert {CA_FILE} {url}/_ping)"
  emit catalog "$(printf 'user = "%s:%s"\\n' {users.PROBE_USER} "$(cat {pw})" \\
    | curl -s -K - --cacert {CA_FILE} '{url}/v2/_catalog?n=1000' | tr -d '\\n')"
else
  emit ping "unknown (no curl on the host)"
fi
true"""


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
    ca_left = pki.days_left(ca)
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


def status_lines(values: dict[str, str]) -> list[str]:
    """Readable lines from the status script's output (pure; unit-tested)."""
    lines = []
    for name in (REGISTRY, NGINX):
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
        repos = len(json.loads(values.get("catalog", "")).get("repositories") or [])
        catalog = f"{repos}{'+' if repos == 1000 else ''} repositories"
    except (ValueError, AttributeError):
        catalog = "unknown"
    lines.append(f"registry data: {values.get('disk') or 'none yet'}; catalog: {catalog}")
    space = free_space(values)
    if space:
        lines.append(f"disk: {mib(space[0])} free of {mib(space[1])}")
    return lines


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


@task
def status(c: Context) -> None:
    """Show the registry host(s): containers, health, certificates, users, disk, catalog."""
    inv = inventory.load()
    aliases = aliases_from(c, inv, "registry", "status")
    if not aliases:
        return
    rep = Report()
    ca = pki.read_cert(pki.paths(inv).ca_cert)
    local_users = sorted(users.load(inv).users())
    wanted_auth = sha256(users.deployed_htpasswd(inv)) if local_users else ""
    failed = []
    for alias in aliases:
        try:
            values = parse_values(
                open_target(inv, alias, c).check(status_script(inv), "reading status").stdout
            )
        except RegkitError as exc:
            rep.failed(alias, "status", str(exc).removeprefix(f"{alias}: "))
            failed.append(alias)
            continue
        for line in status_lines(values):
            rep.info(f"[{alias}] {line}")
        rep.info(f"[{alias}] CA: {pki.days_left(ca)} days left")
        for problem in expiry_problems(
            ca, served_certificate(values.get("served", "")), inv.pki.warn_days
        ):
            rep.info(f"[{alias}] WARNING: {problem}")
        for problem in disk_problems(values, inv.registry.data_dir):
            rep.info(f"[{alias}] WARNING: {problem}")
        drift = "" if values.get("htpasswd") == wanted_auth else " (host differs: run deploy)"
        rep.info(f"[{alias}] users: {', '.join(local_users) or 'none'}{drift}")
    if failed:
        raise RemoteError(f"status failed on {', '.join(failed)}")


@task(name="check-expiry")
def check_expiry(c: Context) -> None:
    """Exit non-zero if the CA or a served certificate expires within pki.warn_days (cron/CI)."""
    inv = inventory.load()
    aliases = aliases_from(c, inv, "registry", "check-expiry")
    if not aliases:
        return
    ca = pki.read_cert(pki.paths(inv).ca_cert)
    rep = Report()
    problems = []
    script = f"{EMIT}\n{served_script(inv)}"
    for alias in aliases:
        values = parse_values(
            open_target(inv, alias, c).check(script, "reading certificates").stdout
        )
        found = expiry_problems(ca, served_certificate(values.get("served", "")), inv.pki.warn_days)
        for problem in found:
            rep.failed(alias, "expiry", problem)
        if not found:
            rep.ok(
                alias, "expiry", f"CA and served certificate valid for {inv.pki.warn_days}+ days"
            )
        problems += [f"{alias}: {p}" for p in found]
    if problems:
        raise RemoteError(f"{len(problems)} certificate problem(s); see above")


ns = Collection("health", status, check_expiry)
