"""The container runtimes on a host, and where each one reads a registry's CA.

- Docker: ``/etc/docker/certs.d/<address>/ca.crt``, read per pull.
- containerd: ``<hosts dir>/<address>/hosts.toml`` naming a ``ca.crt`` beside it, read
  per pull. Its CRI plugin (what Kubernetes pulls with) reads a hosts dir only when
  ``config_path`` in ``/etc/containerd/config.toml`` names one; setting it is the one
  change that needs a containerd restart.
- podman, buildah, skopeo (containers/image): ``/etc/containers/certs.d/<address>/ca.crt``,
  read per call.

Pure: the plan reads the facts a trust-facts script printed. Unit-tested.
"""

from __future__ import annotations

from dataclasses import dataclass

import tomlkit
from tomlkit.exceptions import TOMLKitError

from tasks import render
from tasks.errors import RegkitError
from tasks.inventory import Inventory

CONTAINERD_CONFIG = "/etc/containerd/config.toml"
CONTAINERD_HOSTS = "/etc/containerd/certs.d"
CONTAINERS_CERTS = "/etc/containers/certs.d"
# The CRI plugin's table, by config.toml version (1 when the file names none).
CRI_PLUGIN = {1: ("plugins", "cri"), 2: ("plugins", "io.containerd.grpc.v1.cri")}
# containerd 2 (config version 3) reads /etc/containerd/certs.d unless told otherwise.
CRI_IMAGES_V3 = ("plugins", "io.containerd.cri.v1.images")


class RuntimeConfigError(RegkitError):
    """A runtime's configuration cannot be changed safely; nothing was changed."""


@dataclass(frozen=True)
class Runtime:
    """One runtime's trust on a host: its name, the file it reads (``path``), the CA
    file (``ca``: the same but for containerd, whose hosts.toml names it), how often."""

    name: str
    path: str
    read: str
    ca: str


def docker_runtime(inv: Inventory) -> Runtime:
    path = inv.registry.certs_d
    return Runtime("Docker", path, "read per pull", path)


def containers_runtime(inv: Inventory) -> Runtime:
    path = f"{CONTAINERS_CERTS}/{inv.registry.address}/ca.crt"
    return Runtime("podman/buildah/skopeo", path, "read per call", path)


def containerd_runtime(inv: Inventory, hosts_dir: str) -> Runtime:
    folder = f"{hosts_dir}/{inv.registry.address}"
    return Runtime("containerd", f"{folder}/hosts.toml", "read per pull", f"{folder}/ca.crt")


def hosts_toml(inv: Inventory, hosts_dir: str) -> bytes:
    """containerd's hosts.toml for this registry: pull and push, verified with our CA."""
    ctx = {"url": inv.registry.url, "ca": containerd_runtime(inv, hosts_dir).ca}
    return render.render("containerd-hosts.toml.j2", ctx).encode()


@dataclass(frozen=True)
class ContainerdConfig:
    """Where containerd's CRI reads hosts.toml files, and the config.toml that makes it so.

    ``text`` is the new config.toml when it must change (then containerd restarts),
    else None; ``why`` says in a few words what the CRI reads.
    """

    hosts_dir: str
    text: str | None
    why: str


def _table(doc: dict, keys: tuple[str, ...]) -> dict | None:
    node = doc
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return None
    return node if isinstance(node, dict) else None


def containerd_config(current: str | None) -> ContainerdConfig:
    """Read config.toml (None when absent); set the CRI's config_path if it names no folder.

    An existing config_path is kept (its folder gets our hosts.toml); a CRI that is
    disabled is left alone. Everything else in the file, comments included, is kept.
    """
    where = CONTAINERD_CONFIG
    try:
        doc = tomlkit.parse(current or "")
    except TOMLKitError as exc:
        raise RuntimeConfigError(
            f"{where} is not valid TOML ({exc}); fix it (containerd would not start "
            "with it either), then run trust-ca again"
        ) from None
    version = doc.get("version", 1 if doc else 2)
    disabled = {str(p) for p in doc.get("disabled_plugins", [])}
    if version == 3:
        images = _table(doc, CRI_IMAGES_V3) or {}
        path = str(images.get("registry", {}).get("config_path", "") or CONTAINERD_HOSTS)
        return ContainerdConfig(path.split(":")[0], None, f"CRI reads {path}")
    if version not in CRI_PLUGIN:
        raise RuntimeConfigError(
            f"{where} says version = {version}; regkit reads versions 1 to 3; "
            "set the CRI plugin's registry config_path yourself"
        )
    keys = CRI_PLUGIN[version]
    if {keys[-1], "cri"} & disabled:
        return ContainerdConfig(CONTAINERD_HOSTS, None, "CRI disabled: no config_path needed")
    registry = _table(doc, (*keys, "registry")) or {}
    path = str(registry.get("config_path", ""))
    if path:
        return ContainerdConfig(path.split(":")[0], None, f"CRI reads {path}")
    if registry.get("mirrors") or registry.get("configs"):
        raise RuntimeConfigError(
            f"{where}: the CRI plugin's registry sets mirrors or configs (deprecated), "
            "which containerd refuses beside config_path; move them to hosts.toml files "
            f"under {CONTAINERD_HOSTS} (containerd's docs/hosts.md), then run trust-ca again"
        )
    if not doc:
        doc.add("version", version)
    table = doc
    for key in (*keys, "registry"):
        if key not in table:
            table[key] = tomlkit.table(is_super_table=key != "registry")
        table = table[key]
    table["config_path"] = CONTAINERD_HOSTS
    return ContainerdConfig(
        CONTAINERD_HOSTS, tomlkit.dumps(doc), f"CRI config_path set to {CONTAINERD_HOSTS}"
    )


def hosts_dir(current: str | None) -> str:
    """The hosts dir containerd's CRI reads (the default when config.toml cannot say)."""
    try:
        return containerd_config(current).hosts_dir
    except RuntimeConfigError:
        return CONTAINERD_HOSTS
