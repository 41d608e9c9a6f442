"""What a registry host should hold, made from the inventory and the local state.

Files (with mode and owner), the proxy image's tag and how each container is
started. Nothing here touches a host: the deploy plan compares these values with
the host's facts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from tasks import pki, render, users
from tasks.inventory import Inventory
from tasks.layout import (
    AUTH_DIR,
    AUTH_FILE,
    BACKEND,
    CA_FILE,
    CONFIG_LABEL,
    NETWORK,
    NGINX,
    NGINX_CONTEXT_DIR,
    NGINX_IMAGE,
    PROBE_PASSWORD_FILE,
    REGISTRY,
    REGISTRY_ALIAS,
    REGISTRY_CONFIG_MOUNT,
    REGISTRY_DATA_MOUNT,
    SPEC_LABEL,
    TLS_DIR,
    config_dir,
)
from tasks.remote.upload import Upload, sha256

# The proxy's build context: a change here rebuilds the nginx image.
NGINX_CONTEXT = (
    "Dockerfile",
    "nginx.conf",
    "registry.conf",
    *(f"ui/{name}" for name in render.UI_FILES),
)


def registry_files(inv: Inventory) -> list[Upload]:
    """Everything deploy places on a registry host, from local state."""
    pki.require(inv)
    p = pki.paths(inv)
    build = {rel: content.encode() for rel, (content, _mode) in render.render_all(inv).items()}
    ca = pki.trust_bundle(inv)
    files = [
        Upload(f"{NGINX_CONTEXT_DIR}/{name}", build[f"nginx/{name}"]) for name in NGINX_CONTEXT
    ]
    files += [
        staged_config(build["registry/config.yml"]),
        staged_config(build["registry-readonly/config.yml"]),
        Upload(f"{TLS_DIR}/server.crt", p.server_cert.read_bytes()),
        Upload(f"{TLS_DIR}/server.key", p.server_key.read_bytes(), 0o600),
        password_file(inv),
        Upload(CA_FILE, ca),
        Upload(PROBE_PASSWORD_FILE, users.probe_credential(inv)[0].encode(), 0o600),
        Upload(inv.registry.certs_d, ca),
    ]
    return files


def password_file(inv: Inventory) -> Upload:
    """The password file as the hosts get it: 0640, group of nginx's worker."""
    return Upload(AUTH_FILE, users.deployed_htpasswd(inv), 0o640, 0, render.CONTAINER.worker_gid)


def staged_config(content: bytes) -> Upload:
    """A registry config in the folder named after its content."""
    return Upload(f"{config_dir(sha256(content))}/config.yml", content, 0o600)


def registry_configs(files: list[Upload]) -> tuple[Upload, Upload]:
    """The registry's config and its read-only variant, among ``files``."""
    configs = [f for f in files if f.path == f"{config_dir(f.digest)}/config.yml"]
    normal, readonly = configs
    return normal, readonly


def nginx_tag(files: list[Upload]) -> str:
    """The proxy image's tag: a hash of its build context, so unchanged is never rebuilt."""
    h = hashlib.sha256()
    for f in files:
        if f.path.startswith(f"{NGINX_CONTEXT_DIR}/"):
            h.update(f.path.encode() + b"\0" + f.content + b"\0")
    return f"{NGINX_IMAGE}:{h.hexdigest()[:16]}"


@dataclass(frozen=True)
class RunSpec:
    """A container as deploy wants it; its hash is kept in a label to detect drift."""

    name: str
    image: str
    args: tuple[str, ...]
    # Networks joined after the first (``--network`` in ``args``), before it starts.
    more_networks: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        parts: list[object] = [self.name, self.image, self.args]
        if self.more_networks:
            parts.append(self.more_networks)
        return sha256(json.dumps(parts).encode())[:16]

    @property
    def label(self) -> tuple[str, str]:
        return ("--label", f"{SPEC_LABEL}={self.digest}")


def registry_spec(inv: Inventory, config_digest: str, image: str = "") -> RunSpec:
    """The registry container, running the config with that digest (``fab gc`` runs the
    read-only variant's)."""
    reg = inv.registry
    return RunSpec(
        REGISTRY,
        image or reg.images.registry,
        (
            "--network", BACKEND, "--network-alias", REGISTRY_ALIAS,
            "--restart", "unless-stopped",
            "--label", f"{CONFIG_LABEL}={config_digest[:16]}",
            "-v", f"{reg.data_dir}:{REGISTRY_DATA_MOUNT}",
            "-v", f"{config_dir(config_digest)}:{REGISTRY_CONFIG_MOUNT}:ro",
        ),
    )  # fmt: skip


def nginx_mounts() -> tuple[str, ...]:
    """The proxy's secrets, as folders (a file mount would keep the old inode on replace)."""
    lay = render.CONTAINER
    return (
        "-v", f"{TLS_DIR}:{lay.tls_dir}:ro",
        "-v", f"{AUTH_DIR}:{lay.auth_dir}:ro",
    )  # fmt: skip


def nginx_spec(inv: Inventory, tag: str) -> RunSpec:
    return RunSpec(
        NGINX,
        tag,
        (
            "--network", NETWORK,
            "--restart", "unless-stopped",
            "-p", f"{inv.registry.port}:{render.CONTAINER.listen}",
            *nginx_mounts(),
        ),
        more_networks=(BACKEND,),
    )  # fmt: skip
