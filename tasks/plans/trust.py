"""The trust plan: what a host needs to trust the registry's CA(s), or to stop.

Per host: each container runtime's own per-registry trust (Docker, containerd,
podman/buildah/skopeo: see :mod:`tasks.plans.runtimes`), read without a restart;
the system store, the host's own way (Debian/Ubuntu/Alpine, RHEL/Fedora,
boot2docker, or a marker block in the bundle as a last resort); a restart of the
Docker daemon only when the system store changed, and of containerd only when its
CRI must be pointed at its hosts dir. Pure; unit-tested.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from tasks import scripts
from tasks.facts import parse_values
from tasks.inventory import Inventory
from tasks.plans import runtimes
from tasks.plans.runtimes import CONTAINERD_CONFIG, ContainerdConfig, Runtime
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
# containerd's config.toml as it was, kept until containerd answers with the new one.
PREVIOUS_CONFIG = f"{CONTAINERD_CONFIG}.regkit-previous"


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
    docker_installed: bool = False
    containerd: bool = False
    containerd_config: str | None = None
    docker_on_containerd: bool = False
    containers: bool = False
    login_tool: str = ""
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


def runtime_paths(inv: Inventory, hosts_dir: str = runtimes.CONTAINERD_HOSTS) -> list[str]:
    """Every file trust-ca may place for a runtime (containerd's under ``hosts_dir``)."""
    containerd = runtimes.containerd_runtime(inv, hosts_dir)
    return [
        inv.registry.certs_d,
        containerd.ca,
        containerd.path,
        runtimes.containers_runtime(inv).path,
    ]


def facts_script(inv: Inventory, pems: list[bytes], hosts_dir: str | None = None) -> str:
    """The facts script; ``hosts_dir`` is containerd's when its config names another one."""
    paths = runtime_paths(inv)
    if hosts_dir:
        paths += runtime_paths(inv, hosts_dir)
    paths += sorted({store_path(inv, f, x) for f in FLAVORS for x in SUFFIXES})
    paths.append(CONTAINERD_CONFIG)
    return scripts.script(
        "trust-facts",
        live_restore_format="{{.LiveRestoreEnabled}}",
        containerd_config=CONTAINERD_CONFIG,
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
    "docker_installed": "docker_installed",
    "containerd": "containerd",
    "docker_on_containerd": "docker_on_containerd",
    "containers": "containers",
}


def parse_facts(output: str) -> TrustFacts:
    facts = TrustFacts()
    for key, value in parse_values(output).items():
        if key in _FLAGS:
            setattr(facts, _FLAGS[key], value == "yes")
        elif key in ("os", "id_like", "bundle", "block", "login_tool"):
            setattr(facts, key, value)
        elif key == "containerd_config":
            facts.containerd_config = _decode(value)
        elif key == "live_restore":
            facts.live_restore = value == "true"
        elif key.startswith("in_bundle:"):
            facts.in_bundle[int(key[10:])] = int(value) if value.isdigit() else 0
        elif key.startswith("file:"):
            facts.files[key[5:]] = value
    return facts


def _decode(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "\x00 not base64 text"


@dataclass(frozen=True)
class TrustPlan:
    """What trust-ca (or untrust-ca) changes on one host."""

    flavor: str
    uploads: tuple[Upload, ...]
    remove: tuple[str, ...]
    system_changed: bool
    restart_docker: bool
    live_restore: bool
    runtimes: tuple[Runtime, ...] = ()
    containerd: ContainerdConfig | None = None

    @property
    def restart_containerd(self) -> bool:
        return self.containerd is not None and self.containerd.text is not None

    @property
    def changes(self) -> bool:
        return bool(self.uploads or self.remove or self.system_changed or self.restart_containerd)

    def runtime_changed(self, runtime: Runtime) -> bool:
        """Whether a file of ``runtime``'s folder is placed or removed by this plan."""
        folder = runtime.path.rsplit("/", 1)[0] + "/"
        touched = [u.path for u in self.uploads] + list(self.remove)
        return any(path.startswith(folder) for path in touched)


def containerd_of(facts: TrustFacts) -> ContainerdConfig | None:
    """containerd's hosts dir and config change, when a containerd runs on the host."""
    return runtimes.containerd_config(facts.containerd_config) if facts.containerd else None


def runtime_files(
    inv: Inventory, facts: TrustFacts, containerd: ContainerdConfig | None, bundle: bytes
) -> tuple[tuple[Runtime, ...], list[Upload]]:
    """The runtimes found on the host, and the file(s) each reads the CA(s) from.

    Docker's certs.d is written where Docker is installed, and on a host with no
    runtime found at all (one may come later; curl reads the system store anyway).
    """
    found: list[Runtime] = []
    if facts.docker_installed or not (containerd or facts.containers):
        found.append(runtimes.docker_runtime(inv))
    if facts.containers:
        found.append(runtimes.containers_runtime(inv))
    files = [Upload(runtime.ca, bundle) for runtime in found]
    if containerd:
        runtime = runtimes.containerd_runtime(inv, containerd.hosts_dir)
        found.append(runtime)
        files += [
            Upload(runtime.ca, bundle),
            Upload(runtime.path, runtimes.hosts_toml(inv, containerd.hosts_dir)),
        ]
    return tuple(found), files


def plan(inv: Inventory, flavor: str, facts: TrustFacts, pems: list[bytes]) -> TrustPlan:
    """Trust exactly ``pems`` (the current CA, and the next one during a rotation)."""
    bundle = b"".join(pems)
    containerd = containerd_of(facts)
    found, files = runtime_files(inv, facts, containerd, bundle)
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
    if containerd and containerd.text is not None:
        uploads += (Upload(CONTAINERD_CONFIG, containerd.text.encode()),)
    restart = system_changed and facts.docker
    return TrustPlan(
        flavor, uploads, stale, system_changed, restart, facts.live_restore, found, containerd
    )


def untrust_plan(inv: Inventory, flavor: str, facts: TrustFacts) -> TrustPlan:
    """Remove every file trust-ca placed, and this registry's CAs from the system store."""
    stores = [p for x in SUFFIXES if (p := store_path(inv, flavor, x))]
    hosts_dir = runtimes.hosts_dir(facts.containerd_config)
    placed = dict.fromkeys([*runtime_paths(inv), *runtime_paths(inv, hosts_dir), *stores])
    gone = tuple(p for p in placed if p in facts.files)
    if stores:
        system_changed = any(p in gone for p in stores)
    else:
        empty = sha256(generic_block(inv, b"").encode())
        system_changed = facts.block not in ("", empty, sha256(b""))
    return TrustPlan(
        flavor, (), gone, system_changed, system_changed and facts.docker, facts.live_restore
    )


def restart_containerd_script(facts: TrustFacts) -> str:
    """Restart containerd the host's own way; put the previous config.toml back if it fails."""
    if facts.systemd:
        restart = "systemctl restart containerd"
    elif facts.service:
        restart = "service containerd restart"
    else:
        restart = "/etc/init.d/containerd restart"
    return scripts.script(
        "restart-containerd",
        restart=restart,
        config=CONTAINERD_CONFIG,
        previous=PREVIOUS_CONFIG,
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


def verify_script(
    inv: Inventory, bundle: bytes, system_bundle: str, runtimes_found: tuple[Runtime, ...] = ()
) -> str:
    """The registry verifies with the system store alone; each runtime's CA file holds
    exactly the CA(s); each CA is in the system bundle exactly once."""
    return scripts.script(
        "trust-verify",
        ca_files=[r.ca for r in runtimes_found] or [inv.registry.certs_d],
        bundle_digest=sha256(bundle),
        pem_lines=[pem_marker_line(pem) for pem in split_pems(bundle)],
        system_bundle=system_bundle,
        url=inv.registry.url,
    )
