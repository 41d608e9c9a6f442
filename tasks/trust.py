"""``fab trust-ca``: every Docker host trusts the registry's CA, boot2docker included.

Per host, in parallel:

- Docker's own per-registry trust, ``/etc/docker/certs.d/<domain>[:port]/ca.crt``
  (read without a daemon restart);
- the system store, the host's own way: Debian/Ubuntu/Alpine
  (``/usr/local/share/ca-certificates`` + ``update-ca-certificates``), RHEL/Fedora
  (``/etc/pki/ca-trust/source/anchors`` + ``update-ca-trust``), boot2docker (kept
  under ``/var/lib/boot2docker/certs``, which its boot script loads, and loaded
  now the same way), or, as a last resort, a block between marker lines in the
  system bundle, replaced rather than appended again;
- a restart of the Docker daemon only when the system store changed.

Then it checks that ``https://<domain>/_ping`` verifies with the system store alone.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from invoke import Collection, Context

from tasks import inventory, pki
from tasks.cli import read_secret_stdin, task
from tasks.errors import RegkitError, RemoteError
from tasks.inventory import Inventory
from tasks.remote import EMIT, Target, Upload, aliases_from, file_fact, open_target, q
from tasks.report import Report

BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)
B2D_CERTS = "/var/lib/boot2docker/certs"
B2D_LINKS = "/usr/local/share/ca-certificates/boot2docker"
MAX_PARALLEL = 32


def cert_name(inv: Inventory) -> str:
    """File name stem for this registry's CA in system stores."""
    return "regkit-" + inv.registry.address.replace(":", "_")


def marker(inv: Inventory, edge: str) -> str:
    return f"# {edge} {cert_name(inv)} (managed by regkit trust-ca)"


@dataclass
class TrustFacts:
    """What trust-ca needs to know about a host, read in one command."""

    os: str = ""
    id_like: str = ""
    update_ca_certificates: bool = False
    update_ca_trust: bool = False
    systemd: bool = False
    service: bool = False
    live_restore: bool = False
    docker: bool = False
    bundle: str = ""
    files: dict[str, str] = field(default_factory=dict)
    in_bundle: int = 0
    marked: bool = False


def detect_flavor(declared: str | None, facts: TrustFacts) -> str:
    """The inventory's flavor if given, else what the host says (pure; unit-tested)."""
    if declared:
        return declared
    ids = f"{facts.os} {facts.id_like}".split()
    if "boot2docker" in ids:
        return "boot2docker"
    if {"debian", "ubuntu"} & set(ids) and facts.update_ca_certificates:
        return "debian"
    if "alpine" in ids and facts.update_ca_certificates:
        return "alpine"
    if {"rhel", "fedora", "centos"} & set(ids) and facts.update_ca_trust:
        return "rhel"
    if facts.update_ca_certificates:
        return "debian"
    if facts.update_ca_trust:
        return "rhel"
    return "generic"


def store_path(inv: Inventory, flavor: str) -> str:
    """Where the CA goes in the system store for ``flavor`` ("" for the generic bundle)."""
    name = cert_name(inv)
    return {
        "debian": f"/usr/local/share/ca-certificates/{name}.crt",
        "alpine": f"/usr/local/share/ca-certificates/{name}.crt",
        "rhel": f"/etc/pki/ca-trust/source/anchors/{name}.crt",
        "boot2docker": f"{B2D_CERTS}/{name}.pem",
    }.get(flavor, "")


def pem_marker_line(ca_pem: bytes) -> str:
    """A line of the CA's PEM unique to it (its serial is in it): for counting copies."""
    return ca_pem.decode().splitlines()[1]


def facts_script(inv: Inventory, ca_pem: bytes) -> str:
    paths = [inv.registry.certs_d, *{store_path(inv, f) for f in ("debian", "rhel", "boot2docker")}]
    line = pem_marker_line(ca_pem)
    lines = [
        EMIT,
        "if [ -r /etc/os-release ]; then . /etc/os-release; fi",
        'emit os "${ID:-}"; emit id_like "${ID_LIKE:-}"',
        "command -v update-ca-certificates >/dev/null 2>&1 && emit uca yes",
        "command -v update-ca-trust >/dev/null 2>&1 && emit uct yes",
        "[ -d /run/systemd/system ] && emit systemd yes",
        "command -v service >/dev/null 2>&1 && emit service yes",
        "lr=$(docker info --format '{{.LiveRestoreEnabled}}' 2>/dev/null) && emit docker yes"
        ' && emit live_restore "$lr"',
        f'for b in {" ".join(BUNDLES)}; do [ -f "$b" ] && {{ emit bundle "$b"; break; }}; done',
        f'[ -n "${{b:-}}" ] && [ -f "$b" ] && emit in_bundle "$(grep -c -F -e {q(line)} "$b")"',
        f'[ -n "${{b:-}}" ] && [ -f "$b" ] && grep -q -F -e {q(marker(inv, "BEGIN"))} "$b"'
        " && emit marked yes",
    ]
    lines += [file_fact(path) for path in paths]
    lines.append("true")
    return "\n".join(lines)


def parse_facts(output: str) -> TrustFacts:
    f = TrustFacts()
    flags = {
        "uca": "update_ca_certificates",
        "uct": "update_ca_trust",
        "systemd": "systemd",
        "service": "service",
        "docker": "docker",
        "marked": "marked",
    }
    for row in output.splitlines():
        key, _, value = row.partition("\t")
        if key in flags:
            setattr(f, flags[key], value == "yes")
        elif key in ("os", "id_like", "bundle"):
            setattr(f, key, value)
        elif key == "live_restore":
            f.live_restore = value == "true"
        elif key == "in_bundle":
            f.in_bundle = int(value) if value.isdigit() else 0
        elif key.startswith("file:"):
            f.files[key[5:]] = value
    return f


def restart_command(flavor: str, facts: TrustFacts) -> str:
    """The host's own way to restart dockerd, then wait until it answers (pure)."""
    if flavor == "boot2docker":
        restart = "/etc/init.d/docker restart"
    elif facts.systemd:
        restart = "systemctl restart docker"
    elif facts.service:
        restart = "service docker restart"
    else:
        restart = "/etc/init.d/docker restart"
    return (
        f"{restart} >/dev/null 2>&1 || true\n"
        "for i in $(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done\n"
        "echo 'docker did not answer within 60 s of the restart' >&2; exit 1"
    )


def activate_script(inv: Inventory, flavor: str, facts: TrustFacts, ca_pem: bytes) -> str:
    """Make the system store include (or, with ``ca_pem`` empty, drop) the CA now."""
    name = cert_name(inv)
    if flavor in ("debian", "alpine"):
        return "update-ca-certificates >/dev/null 2>&1"
    if flavor == "rhel":
        return "update-ca-trust extract"
    if flavor == "boot2docker":
        link = f"{B2D_LINKS}/{name}.pem.crt"
        if not ca_pem:
            return f"rm -f {q(link)}\nupdate-ca-certificates >/dev/null 2>&1"
        # As boot2docker's bootsync.sh does at every boot.
        return (
            f"mkdir -p {B2D_LINKS}\nln -sfT {q(store_path(inv, flavor))} {q(link)}\n"
            "update-ca-certificates >/dev/null 2>&1"
        )
    bundle = facts.bundle or BUNDLES[0]
    begin, end = marker(inv, "BEGIN"), marker(inv, "END")
    block = f"{begin}\n{ca_pem.decode()}{end}\n" if ca_pem else ""
    return (
        "set -e\n"
        f"tmp=$(mktemp {q(bundle)}.XXXXXX)\n"
        f"awk -v b={q(begin)} -v e={q(end)} '$0==b{{skip=1}} !skip{{print}} $0==e{{skip=0}}' "
        f'{q(bundle)} > "$tmp"\n'
        f"printf '%s' {q(block)} >> \"$tmp\"\n"
        f'chmod --reference={q(bundle)} "$tmp"\nmv -f "$tmp" {q(bundle)}'
    )


def verify_script(inv: Inventory, ca_sha: str, bundle: str, line: str) -> str:
    """The registry verifies with the system store alone; the CA is on disk exactly once."""
    url = inv.registry.url
    return f"""set -u
got=$(sha256sum < {q(inv.registry.certs_d)} | cut -d' ' -f1)
[ "$got" = {ca_sha} ] || {{ echo "{inv.registry.certs_d} is not the local CA" >&2; exit 1; }}
n=$(grep -c -F -e {q(line)} {q(bundle)})
[ "$n" = 1 ] || {{ echo "the system bundle holds the CA $n times, not once" >&2; exit 1; }}
if command -v curl >/dev/null 2>&1; then
  err=$(curl -sS -o /dev/null {url}/_ping 2>&1) \\
    || {{ echo "{url}/_ping with the system store: $err" >&2; exit 1; }}
  echo "{url}/_ping verifies with the system store; CA on disk once, fingerprint matches"
else
  echo "CA on disk once, fingerprint matches (no curl to test {url})"
fi"""


def trust_host(inv: Inventory, t: Target, rep: Report, login: tuple[str, str] | None) -> None:
    a = t.alias
    ca_pem = pki.paths(inv).ca_cert.read_bytes()
    ca_cert = pki.read_cert(pki.paths(inv).ca_cert)
    facts = parse_facts(t.check(facts_script(inv, ca_pem), "reading facts").stdout)
    flavor = detect_flavor(t.spec.flavor, facts)
    files = [Upload(inv.registry.certs_d, ca_pem)]
    store = store_path(inv, flavor)
    if store:
        files.append(Upload(store, ca_pem))
    changed = [f for f in files if facts.files.get(f.path) != f.fact]
    system_changed = (store and store in {f.path for f in changed}) or (
        not store and (not facts.marked or facts.in_bundle != 1)
    )
    if flavor == "boot2docker" and not system_changed and facts.in_bundle == 0:
        system_changed = True  # persisted but not loaded (e.g. removed by hand since)
    t.upload(changed)
    for f in changed:
        rep.changed(a, f"file {f.path}", "new" if f.path not in facts.files else "replaced")
    if system_changed:
        t.check(activate_script(inv, flavor, facts, ca_pem), f"updating the {flavor} CA store")
        rep.changed(a, f"system CA store ({flavor})", "CA added")
        if facts.docker:
            note = "" if facts.live_restore else "; running containers restart with it"
            rep.info(f"[{a}] restarting the Docker daemon to load the system store{note}")
            start = time.monotonic()
            t.check(restart_command(flavor, facts), "restarting docker")
            rep.changed(a, "docker daemon", f"restarted in {time.monotonic() - start:.1f} s")
    else:
        rep.unchanged(a, f"system CA store ({flavor})", "CA present once")
    if not changed:
        rep.unchanged(a, "Docker trust", inv.registry.certs_d)
    after = parse_facts(t.check(facts_script(inv, ca_pem), "reading facts").stdout)
    bundle = after.bundle or BUNDLES[0]
    out = t.check(
        verify_script(inv, pki.sha256_pem(ca_cert), bundle, pem_marker_line(ca_pem)),
        "verifying trust",
    )
    rep.ok(a, "verify", out.stdout.strip())
    if login:
        ensure_login(inv, t, rep, *login)


def login_script(inv: Inventory, user: str, password: str) -> tuple[str, str]:
    """A script that logs in only if root's Docker config lacks exactly these credentials.

    Its stdin carries the SHA-256 of the wanted credential, then the password: the
    stored credential is compared by hash (nothing secret is sent back), the
    password reaches ``docker login`` on stdin, and neither is ever in argv.
    """
    addr = inv.registry.address
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    wanted = hashlib.sha256(auth.encode()).hexdigest()
    script = f"""read -r wanted
cfg="${{DOCKER_CONFIG:-$HOME/.docker}}/config.json"
have=$(tr -d ' \\t\\n' < "$cfg" 2>/dev/null | grep -o {q(f'"{addr}":{{"auth":"[^"]*"')} \\
  | sed 's/.*"auth":"\\([^"]*\\)"/\\1/' | tr -d '\\n' | sha256sum | cut -d' ' -f1)
if [ "$have" = "$wanted" ]; then cat >/dev/null; echo unchanged; exit 0; fi
docker login -u {q(user)} --password-stdin {q(addr)} >/dev/null && echo changed"""
    return script, f"{wanted}\n{password}\n"


def ensure_login(inv: Inventory, t: Target, rep: Report, user: str, password: str) -> None:
    script, stdin = login_script(inv, user, password)
    out = t.check(script, f"docker login as {user}", stdin=stdin).stdout.strip()
    where = f"{user} at {inv.registry.address} (root's Docker config)"
    if out.endswith("unchanged"):
        rep.unchanged(t.alias, "docker login", where)
    else:
        rep.changed(t.alias, "docker login", where)


def untrust_host(inv: Inventory, t: Target, rep: Report) -> None:
    a = t.alias
    ca_pem = pki.paths(inv).ca_cert.read_bytes()
    facts = parse_facts(t.check(facts_script(inv, ca_pem), "reading facts").stdout)
    flavor = detect_flavor(t.spec.flavor, facts)
    store = store_path(inv, flavor)
    certs_d = inv.registry.certs_d
    gone = [p for p in (certs_d, store) if p and p in facts.files]
    if gone:
        folder = certs_d.rsplit("/", 1)[0]
        paths = " ".join(q(p) for p in gone)
        t.check(f"rm -f {paths}\nrmdir {q(folder)} 2>/dev/null\ntrue", "removing CA files")
        for p in gone:
            rep.changed(a, f"file {p}", "removed")
    system_changed = (store and store in gone) or (not store and facts.marked)
    if system_changed:
        t.check(activate_script(inv, flavor, facts, b""), f"updating the {flavor} CA store")
        rep.changed(a, f"system CA store ({flavor})", "CA removed")
        if facts.docker:
            t.check(restart_command(flavor, facts), "restarting docker")
            rep.changed(a, "docker daemon", "restarted")
    if not gone and not system_changed:
        rep.unchanged(a, "trust", "this CA was not installed")


Work = Callable[[Inventory, Target, Report], None]


def run_parallel(
    inv: Inventory, c: Context, aliases: list[str], rep: Report, work: Work
) -> list[str]:
    """Run ``work(inv, target, rep)`` on every host at once; return the failed aliases."""

    def one(alias: str) -> str | None:
        try:
            work(inv, open_target(inv, alias, c), rep)
        except RegkitError as exc:
            rep.failed(alias, "trust", str(exc).removeprefix(f"{alias}: "))
            return alias
        except Exception as exc:  # one host's surprise must not hide the others
            rep.failed(alias, "trust", f"unexpected {type(exc).__name__}: {exc}")
            return alias
        return None

    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(aliases))) as pool:
        return [alias for alias in pool.map(one, aliases) if alias]


@task(
    name="trust-ca",
    help={
        "login": "Also run 'docker login' on each host as this registry user.",
        "password-stdin": "With --login: read the password from standard input.",
    },
)
def trust_ca(c: Context, login: str = "", password_stdin: bool = False) -> None:
    """Make Docker hosts trust the registry's CA (default: every client in the inventory)."""
    inv = inventory.load()
    aliases = aliases_from(c, inv, "client", "trust-ca")
    if not aliases:
        return
    pki.read_cert(pki.paths(inv).ca_cert)
    credentials = None
    if login:
        password = read_secret_stdin("password") if password_stdin else getpass.getpass()
        credentials = (login, password)
    rep = Report()
    failed = run_parallel(inv, c, aliases, rep, lambda i, t, r: trust_host(i, t, r, credentials))
    rep.summary()
    if failed:
        raise RemoteError(f"trust-ca failed on {', '.join(failed)}")


@task(name="untrust-ca")
def untrust_ca(c: Context) -> None:
    """Remove what trust-ca installed; restart Docker only where the system store changed."""
    inv = inventory.load()
    aliases = aliases_from(c, inv, "client", "untrust-ca")
    if not aliases:
        return
    pki.read_cert(pki.paths(inv).ca_cert)
    rep = Report()
    failed = run_parallel(inv, c, aliases, rep, untrust_host)
    rep.summary()
    if failed:
        raise RemoteError(f"untrust-ca failed on {', '.join(failed)}")


ns = Collection("trust", trust_ca, untrust_ca)
