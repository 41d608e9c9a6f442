"""The trust plan: what a Docker host needs to trust the registry's CA(s), or to stop.

Per host: Docker's own per-registry trust (``certs.d``, read without a restart);
the system store, the host's own way (Debian/Ubuntu/Alpine, RHEL/Fedora,
boot2docker, or a marker block in the bundle as a last resort); and a restart of
the Docker daemon only when the system store changed. Pure; unit-tested.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks import scripts
from tasks.facts import parse_values
from tasks.inventory import Inventory
from tasks.remote.upload import Upload, sha256

BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)
B2D_CERTS = "/var/lib/boot2docker/certs"
B2D_LINKS = "/usr/local/share/ca-certificates/boot2docker"
# The current CA, then the next one while a rotation is under way.
SUFFIXES = ("", "-next")
FLAVORS = ("debian", "rhel", "boot2docker")


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
    """The inventory's flavor if given, else what the host says."""
    if declared:
        return declared
    ids = set(f"{facts.os} {facts.id_like}".split())
    if "boot2docker" in ids:
        return "boot2docker"
    if {"debian", "ubuntu"} & ids and facts.update_ca_certificates:
        return "debian"
    if "alpine" in ids and facts.update_ca_certificates:
        return "alpine"
    if {"rhel", "fedora", "centos"} & ids and facts.update_ca_trust:
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


def pem_marker_line(ca_pem: bytes) -> str:
    """A line of the CA's PEM unique to it (its serial is in it): for counting copies."""
    return ca_pem.decode().splitlines()[1]


def split_pems(bundle: bytes) -> list[bytes]:
    end = b"-----END CERTIFICATE-----\n"
    return [part + end for part in bundle.split(end) if part.strip()]


def generic_block(inv: Inventory, bundle: bytes) -> str:
    """The marker block the generic flavor keeps in the system bundle."""
    return f"{marker(inv, 'BEGIN')}\n{bundle.decode()}{marker(inv, 'END')}\n"


def facts_script(inv: Inventory, pems: list[bytes]) -> str:
    paths = [inv.registry.certs_d, *{store_path(inv, f, x) for f in FLAVORS for x in SUFFIXES}]
    return scripts.script(
        "trust-facts",
        live_restore_format="{{.LiveRestoreEnabled}}",
        bundles=BUNDLES,
        begin=marker(inv, "BEGIN"),
        end=marker(inv, "END"),
        pem_lines=[pem_marker_line(pem) for pem in pems],
        paths=paths,
    )


_FLAGS = {
    "uca": "update_ca_certificates",
    "uct": "update_ca_trust",
    "systemd": "systemd",
    "service": "service",
    "docker": "docker",
}


def parse_facts(output: str) -> TrustFacts:
    facts = TrustFacts()
    for key, value in parse_values(output).items():
        if key in _FLAGS:
            setattr(facts, _FLAGS[key], value == "yes")
        elif key in ("os", "id_like", "bundle", "block"):
            setattr(facts, key, value)
        elif key == "live_restore":
            facts.live_restore = value == "true"
        elif key.startswith("in_bundle:"):
            facts.in_bundle[int(key[10:])] = int(value) if value.isdigit() else 0
        elif key.startswith("file:"):
            facts.files[key[5:]] = value
    return facts


@dataclass(frozen=True)
class TrustPlan:
    """What trust-ca (or untrust-ca) changes on one host."""

    flavor: str
    uploads: tuple[Upload, ...]
    remove: tuple[str, ...]
    system_changed: bool
    restart_docker: bool
    live_restore: bool

    @property
    def changes(self) -> bool:
        return bool(self.uploads or self.remove or self.system_changed)


def plan(inv: Inventory, flavor: str, facts: TrustFacts, pems: list[bytes]) -> TrustPlan:
    """Trust exactly ``pems`` (the current CA, and the next one during a rotation)."""
    bundle = b"".join(pems)
    files = [Upload(inv.registry.certs_d, bundle)]
    wanted_store = {store_path(inv, flavor, x): pem for x, pem in zip(SUFFIXES, pems, strict=False)}
    files += [Upload(path, pem) for path, pem in wanted_store.items() if path]
    uploads = tuple(f for f in files if facts.files.get(f.path) != f.fact)
    stale = tuple(
        path
        for x in SUFFIXES
        if (path := store_path(inv, flavor, x)) and path not in wanted_store and path in facts.files
    )
    if flavor == "generic":
        system_changed = facts.block != sha256(generic_block(inv, bundle).encode())
    else:
        store_paths = set(wanted_store) - {""}
        system_changed = bool(stale) or any(f.path in store_paths for f in uploads)
        # Persisted but not loaded (boot2docker's store after a manual change).
        system_changed |= any(facts.in_bundle.get(i, 0) != 1 for i in range(len(pems)))
    return TrustPlan(
        flavor, uploads, stale, system_changed, system_changed and facts.docker, facts.live_restore
    )


def untrust_plan(inv: Inventory, flavor: str, facts: TrustFacts) -> TrustPlan:
    """Remove every file trust-ca placed, and this registry's CAs from the system store."""
    stores = [p for x in SUFFIXES if (p := store_path(inv, flavor, x))]
    gone = tuple(p for p in (inv.registry.certs_d, *stores) if p in facts.files)
    if stores:
        system_changed = any(p in gone for p in stores)
    else:
        empty = sha256(generic_block(inv, b"").encode())
        system_changed = facts.block not in ("", empty, sha256(b""))
    return TrustPlan(
        flavor, (), gone, system_changed, system_changed and facts.docker, facts.live_restore
    )


def restart_script(flavor: str, facts: TrustFacts) -> str:
    """The host's own way to restart dockerd, then wait until it answers."""
    if flavor == "boot2docker":
        restart = "/etc/init.d/docker restart"
    elif facts.systemd:
        restart = "systemctl restart docker"
    elif facts.service:
        restart = "service docker restart"
    else:
        restart = "/etc/init.d/docker restart"
    return scripts.script("restart-docker", restart=restart)


def store_script(inv: Inventory, flavor: str, facts: TrustFacts, bundle: bytes) -> str:
    """Make the system store hold exactly the CAs in ``bundle`` (none when empty), now."""
    if flavor in ("debian", "alpine"):
        # Not --fresh: that rehashes every CA (about 1 s); a plain run links what is
        # new, drops links to removed files and rebuilds the bundle.
        return "update-ca-certificates >/dev/null 2>&1"
    if flavor == "rhel":
        return "update-ca-trust extract"
    if flavor == "boot2docker":
        return scripts.script(
            "boot2docker-store", links=B2D_LINKS, certs=B2D_CERTS, name=cert_name(inv)
        )
    return scripts.script(
        "bundle-block",
        bundle=facts.bundle or BUNDLES[0],
        begin=marker(inv, "BEGIN"),
        end=marker(inv, "END"),
        block=generic_block(inv, bundle) if bundle else "",
    )


def verify_script(inv: Inventory, bundle: bytes, system_bundle: str) -> str:
    """The registry verifies with the system store alone; each CA is on disk exactly once."""
    return scripts.script(
        "trust-verify",
        certs_d=inv.registry.certs_d,
        bundle_digest=sha256(bundle),
        pem_lines=[pem_marker_line(pem) for pem in split_pems(bundle)],
        system_bundle=system_bundle,
        url=inv.registry.url,
    )
