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
from dataclasses import dataclass, field

from invoke import Collection, Context

from tasks import inventory, pki
from tasks.cli import read_secret_stdin, task
from tasks.inventory import Inventory
from tasks.remote import EMIT, Target, Upload, aliases_from, each_host, files_fact, q, sha256
from tasks.report import Report

BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)
B2D_CERTS = "/var/lib/boot2docker/certs"
B2D_LINKS = "/usr/local/share/ca-certificates/boot2docker"


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
    in_bundle: dict[int, int] = field(default_factory=dict)
    block: str = ""


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


def store_path(inv: Inventory, flavor: str, suffix: str = "") -> str:
    """Where a CA goes in the system store for ``flavor`` ("" for the generic bundle).

    ``suffix`` is "-next" for the next CA during a rotation.
    """
    name = cert_name(inv) + suffix
    return {
        "debian": f"/usr/local/share/ca-certificates/{name}.crt",
        "alpine": f"/usr/local/share/ca-certificates/{name}.crt",
        "rhel": f"/etc/pki/ca-trust/source/anchors/{name}.crt",
        "boot2docker": f"{B2D_CERTS}/{name}.pem",
    }.get(flavor, "")


SUFFIXES = ("", "-next")


def pem_marker_line(ca_pem: bytes) -> str:
    """A line of the CA's PEM unique to it (its serial is in it): for counting copies."""
    return ca_pem.decode().splitlines()[1]


def generic_block(inv: Inventory, bundle: bytes) -> str:
    """The marker block the generic flavor keeps in the system bundle."""
    return f"{marker(inv, 'BEGIN')}\n{bundle.decode()}{marker(inv, 'END')}\n"


def facts_script(inv: Inventory, pems: list[bytes]) -> str:
    flavors = ("debian", "rhel", "boot2docker")
    paths = [inv.registry.certs_d, *{store_path(inv, f, x) for f in flavors for x in SUFFIXES}]
    begin, end = q(marker(inv, "BEGIN")), q(marker(inv, "END"))
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
        f"b=; for c in {' '.join(BUNDLES)}; do "
        '[ -f "$c" ] && { b=$c; emit bundle "$b"; break; }; done',
        f'[ -n "$b" ] && emit block "$(awk -v b={begin} -v e={end} '
        "'$0==b{on=1} on{print} $0==e{on=0}' \"$b\" | sha256sum | cut -d' ' -f1)\"",
    ]
    for i, pem in enumerate(pems):
        line = q(pem_marker_line(pem))
        lines.append(f'[ -n "$b" ] && emit in_bundle:{i} "$(grep -c -F -e {line} "$b")"')
    lines.append(files_fact(paths))
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
    }
    for row in output.splitlines():
        key, _, value = row.partition("\t")
        if key in flags:
            setattr(f, flags[key], value == "yes")
        elif key in ("os", "id_like", "bundle", "block"):
            setattr(f, key, value)
        elif key == "live_restore":
            f.live_restore = value == "true"
        elif key.startswith("in_bundle:"):
            f.in_bundle[int(key[10:])] = int(value) if value.isdigit() else 0
        elif key.startswith("file:"):
            f.files[key[5:]] = value
    return f


@dataclass
class Plan:
    """What trust-ca changes on one host (pure; unit-tested)."""

    uploads: list[Upload]
    stale: list[str]
    system_changed: bool


def plan(inv: Inventory, flavor: str, facts: TrustFacts, pems: list[bytes]) -> Plan:
    bundle = b"".join(pems)
    files = [Upload(inv.registry.certs_d, bundle)]
    wanted_store = {store_path(inv, flavor, x): pem for x, pem in zip(SUFFIXES, pems, strict=False)}
    files += [Upload(path, pem) for path, pem in wanted_store.items() if path]
    uploads = [f for f in files if facts.files.get(f.path) != f.fact]
    stale = [
        path
        for x in SUFFIXES
        if (path := store_path(inv, flavor, x)) and path not in wanted_store and path in facts.files
    ]
    if flavor == "generic":
        system_changed = facts.block != sha256(generic_block(inv, bundle).encode())
    else:
        store_paths = set(wanted_store) - {""}
        system_changed = bool(stale) or any(f.path in store_paths for f in uploads)
        # Persisted but not loaded (boot2docker's store after a manual change).
        system_changed |= any(facts.in_bundle.get(i, 0) != 1 for i in range(len(pems)))
    return Plan(uploads, stale, system_changed)


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
        "for i in $(seq 300); do docker info >/dev/null 2>&1 && exit 0; sleep 0.2; done\n"
        "echo 'docker did not answer within 60 s of the restart' >&2; exit 1"
    )


def activate_script(inv: Inventory, flavor: str, facts: TrustFacts, bundle: bytes) -> str:
    """Make the system store hold exactly the CAs in ``bundle`` (none when empty), now."""
    name = cert_name(inv)
    if flavor in ("debian", "alpine"):
        # Not --fresh: that rehashes every CA (about 1 s); a plain run links what is
        # new, drops links to removed files and rebuilds the bundle.
        return "update-ca-certificates >/dev/null 2>&1"
    if flavor == "rhel":
        return "update-ca-trust extract"
    if flavor == "boot2docker":
        # As boot2docker's bootsync.sh does at every boot, for this registry's files.
        return (
            f"mkdir -p {B2D_LINKS}\nrm -f {B2D_LINKS}/{q(name)}*\n"
            f"for f in {B2D_CERTS}/{q(name)}*.pem; do\n"
            f'  [ -e "$f" ] && ln -sfT "$f" {B2D_LINKS}/"$(basename "$f").crt"\n'
            "done\nupdate-ca-certificates --fresh >/dev/null 2>&1"
        )
    target = facts.bundle or BUNDLES[0]
    begin, end = marker(inv, "BEGIN"), marker(inv, "END")
    block = generic_block(inv, bundle) if bundle else ""
    return (
        "set -e\n"
        f"tmp=$(mktemp {q(target)}.XXXXXX)\n"
        f"awk -v b={q(begin)} -v e={q(end)} '$0==b{{skip=1}} !skip{{print}} $0==e{{skip=0}}' "
        f'{q(target)} > "$tmp"\n'
        f"printf '%s' {q(block)} >> \"$tmp\"\n"
        f'chmod 644 "$tmp"\nmv -f "$tmp" {q(target)}'
    )


def verify_script(inv: Inventory, bundle: bytes, system_bundle: str) -> str:
    """The registry verifies with the system store alone; each CA is on disk exactly once."""
    url = inv.registry.url
    checks = "\n".join(
        f"n=$(grep -c -F -e {q(pem_marker_line(pem))} {q(system_bundle)})\n"
        f'[ "$n" = 1 ] || {{ echo "the system bundle holds CA {i + 1} $n times, not once" >&2; '
        "exit 1; }"
        for i, pem in enumerate(split_pems(bundle))
    )
    return f"""set -u
got=$(sha256sum < {q(inv.registry.certs_d)} | cut -d' ' -f1)
[ "$got" = {sha256(bundle)} ] \\
  || {{ echo "{inv.registry.certs_d} does not hold the local CA(s)" >&2; exit 1; }}
{checks}
if command -v curl >/dev/null 2>&1; then
  err=$(curl -sS -o /dev/null {url}/_ping 2>&1) \\
    || {{ echo "{url}/_ping with the system store: $err" >&2; exit 1; }}
  echo "{url}/_ping verifies with the system store; CA on disk once, fingerprint matches"
else
  echo "CA on disk once, fingerprint matches (no curl to test {url})"
fi"""


def split_pems(bundle: bytes) -> list[bytes]:
    end = b"-----END CERTIFICATE-----\n"
    return [part + end for part in bundle.split(end) if part.strip()]


def trust_host(inv: Inventory, t: Target, rep: Report, login: tuple[str, str] | None) -> None:
    a = t.alias
    pems = [pki.cert_pem(ca) for ca in pki.trusted_cas(inv)]
    bundle = b"".join(pems)
    facts = parse_facts(t.check(facts_script(inv, pems), "reading facts").stdout)
    flavor = detect_flavor(t.spec.flavor, facts)
    todo = plan(inv, flavor, facts, pems)
    t.upload(todo.uploads)
    for f in todo.uploads:
        rep.changed(a, f"file {f.path}", "new" if f.path not in facts.files else "replaced")
    if todo.stale:
        t.check(f"rm -f {' '.join(q(p) for p in todo.stale)}", "removing a retired CA")
        for path in todo.stale:
            rep.changed(a, f"file {path}", "removed (a CA no longer trusted)")
    if todo.system_changed:
        t.check(activate_script(inv, flavor, facts, bundle), f"updating the {flavor} CA store")
        what = "CA trusted" if len(pems) == 1 else f"{len(pems)} CAs trusted (rotation under way)"
        rep.changed(a, f"system CA store ({flavor})", what)
        if facts.docker:
            note = "" if facts.live_restore else "; running containers restart with it"
            rep.info(f"[{a}] restarting the Docker daemon to load the system store{note}")
            start = time.monotonic()
            t.check(restart_command(flavor, facts), "restarting docker")
            rep.changed(a, "docker daemon", f"restarted in {time.monotonic() - start:.1f} s")
    else:
        rep.unchanged(a, f"system CA store ({flavor})", "CA present once")
    if not todo.uploads:
        rep.unchanged(a, "Docker trust", inv.registry.certs_d)
    out = t.check(verify_script(inv, bundle, facts.bundle or BUNDLES[0]), "verifying trust")
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
    out = t.feed(script, stdin.encode(), f"docker login as {user}").strip()
    where = f"{user} at {inv.registry.address} (root's Docker config)"
    if out.endswith("unchanged"):
        rep.unchanged(t.alias, "docker login", where)
    else:
        rep.changed(t.alias, "docker login", where)


def untrust_host(inv: Inventory, t: Target, rep: Report) -> None:
    a = t.alias
    pems = [pki.cert_pem(ca) for ca in pki.trusted_cas(inv)]
    facts = parse_facts(t.check(facts_script(inv, pems), "reading facts").stdout)
    flavor = detect_flavor(t.spec.flavor, facts)
    certs_d = inv.registry.certs_d
    stores = [p for x in SUFFIXES if (p := store_path(inv, flavor, x))]
    gone = [p for p in (certs_d, *stores) if p in facts.files]
    if gone:
        folder = certs_d.rsplit("/", 1)[0]
        paths = " ".join(q(p) for p in gone)
        t.check(f"rm -f {paths}\nrmdir {q(folder)} 2>/dev/null\ntrue", "removing CA files")
        for p in gone:
            rep.changed(a, f"file {p}", "removed")
    empty = sha256(generic_block(inv, b"").encode())
    if stores:
        system_changed = any(p in gone for p in stores)
    else:
        system_changed = facts.block not in ("", empty, sha256(b""))
    if system_changed:
        t.check(activate_script(inv, flavor, facts, b""), f"updating the {flavor} CA store")
        rep.changed(a, f"system CA store ({flavor})", "CA removed")
        if facts.docker:
            t.check(restart_command(flavor, facts), "restarting docker")
            rep.changed(a, "docker daemon", "restarted")
    if not gone and not system_changed:
        rep.unchanged(a, "trust", "this CA was not installed")


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
    each_host(
        c,
        inv,
        aliases,
        rep,
        "trust-ca",
        lambda t: trust_host(inv, t, rep, credentials),
        step="trust",
        parallel=True,
    )


@task(name="untrust-ca")
def untrust_ca(c: Context) -> None:
    """Remove what trust-ca installed; restart Docker only where the system store changed."""
    inv = inventory.load()
    aliases = aliases_from(c, inv, "client", "untrust-ca")
    if not aliases:
        return
    pki.read_cert(pki.paths(inv).ca_cert)
    rep = Report()
    each_host(
        c,
        inv,
        aliases,
        rep,
        "untrust-ca",
        lambda t: untrust_host(inv, t, rep),
        step="trust",
        parallel=True,
    )


ns = Collection("trust", trust_ca, untrust_ca)
