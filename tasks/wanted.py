"""What a registry host should hold, made from the inventory and the local state.

Files (with mode and owner), the proxy image's tag and how each container is
started. Nothing here touches a host: the deploy plan compares these values with
the host's facts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from tasks import certificates, mirror, pki, render, rights, signing, storage, users
from tasks.inventory import Inventory
from tasks.layout import (
    AUTH_DIR,
    AUTH_FILE,
    AUTH_MOUNT,
    BACKEND,
    CA_FILE,
    CONFIG_LABEL,
    MAINTENANCE_DIR,
    MIRROR,
    MIRROR_ALIAS,
    MIRROR_CA_NAME,
    MIRROR_CLIENTS_CA,
    MIRROR_PROBE_CERT,
    MIRROR_PROBE_KEY,
    NETWORK,
    NGINX,
    NGINX_CONTEXT_DIR,
    NGINX_IMAGE,
    PASSWORD_GID,
    PROBE_PASSWORD_FILE,
    REGISTRY,
    REGISTRY_ALIAS,
    REGISTRY_CONFIG,
    REGISTRY_CONFIG_MOUNT,
    REGISTRY_DATA_MOUNT,
    RIGHTS_DIR,
    RIGHTS_FILE,
    RIGHTS_MOUNT,
    S3_CA_FILE,
    S3_CA_MOUNT,
    SIGNING_MOUNT,
    SPEC_LABEL,
    TLS_DIR,
    TOKEND,
    TOKEND_ALIAS,
    TOKEND_CONTEXT_DIR,
    TOKEND_DIR,
    TOKEND_IMAGE,
    TOKEND_UID,
    config_dir,
    mirror_config_dir,
)
from tasks.remote.upload import Upload, sha256

# The proxy's build context: a change here rebuilds the nginx image.
NGINX_CONTEXT = (
    "Dockerfile",
    "nginx.conf",
    "registry.conf",
    *(f"ui/{name}" for name in render.UI_FILES),
)
# The token service's build context.
TOKEND_CONTEXT = ("Dockerfile", *render.TOKEND_FILES)


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
        Upload(f"{TOKEND_CONTEXT_DIR}/{name}", build[f"token/{name}"]) for name in TOKEND_CONTEXT
    ]
    key, cert = signing.material(inv)
    files += [
        *staged_config(build["registry/config.yml"], cert),
        *staged_config(build["registry-readonly/config.yml"], cert),
        Upload(f"{TLS_DIR}/server.crt", p.server_cert.read_bytes()),
        Upload(f"{TLS_DIR}/server.key", p.server_key.read_bytes(), 0o600),
        Upload(f"{TOKEND_DIR}/token.key", key, 0o600, TOKEND_UID, TOKEND_UID),
        Upload(f"{TOKEND_DIR}/token.crt", cert),
        password_file(inv),
        rights_file(inv),
        Upload(CA_FILE, ca),
        Upload(PROBE_PASSWORD_FILE, users.probe_credential(inv)[0].encode(), 0o600),
        Upload(inv.registry.certs_d, ca),
    ]
    s3_ca = storage.s3_ca(inv)
    if s3_ca:
        files.append(Upload(S3_CA_FILE, s3_ca))
    if inv.registry.mirror is not None:
        files += mirror_files(inv, build["mirror/config.yml"])
    return files


def mirror_files(inv: Inventory, config: bytes) -> list[Upload]:
    """The mirror's config (0600), its upstream's CA if private, and the CA whose client
    certificates nginx admits to the mirror."""
    clients_ca = certificates.cert_pem(mirror.client_ca(inv)[1])
    probe_key, probe_cert = mirror.probe_client(inv)
    folder = mirror_config_dir(sha256(config))
    files = [
        Upload(f"{folder}/config.yml", config, 0o600),
        Upload(f"{TLS_DIR}/{MIRROR_CLIENTS_CA}", clients_ca),
        Upload(MIRROR_PROBE_KEY, probe_key, 0o600),
        Upload(MIRROR_PROBE_CERT, probe_cert),
    ]
    upstream_ca = mirror.upstream_ca(inv)
    if upstream_ca:
        files.append(Upload(f"{folder}/{MIRROR_CA_NAME}", upstream_ca))
    return files


def password_file(inv: Inventory) -> Upload:
    """The password file as the hosts get it: 0640, group PASSWORD_GID."""
    return Upload(AUTH_FILE, users.deployed_htpasswd(inv), 0o640, 0, PASSWORD_GID)


def rights_file(inv: Inventory) -> Upload:
    """Each user's role and patterns as the token service reads them: 0640, its group."""
    document = rights.document(rights.effective(inv, users.names(inv)), users.PROBE_USER)
    return Upload(RIGHTS_FILE, document, 0o640, 0, TOKEND_UID)


def staged_config(content: bytes, token_cert: bytes) -> tuple[Upload, Upload]:
    """A registry config in the folder named after its content, with the token
    certificate it trusts (the config names the certificate's fingerprint)."""
    folder = config_dir(sha256(content))
    return Upload(f"{folder}/config.yml", content, 0o600), Upload(f"{folder}/token.crt", token_cert)


def mirror_config(files: list[Upload]) -> Upload | None:
    """The mirror's config among ``files`` (None without a mirror)."""
    return next((f for f in files if f.path == f"{mirror_config_dir(f.digest)}/config.yml"), None)


def registry_configs(files: list[Upload]) -> tuple[Upload, Upload]:
    """The registry's config and its read-only variant, among ``files``."""
    configs = [f for f in files if f.path == f"{config_dir(f.digest)}/config.yml"]
    normal, readonly = configs
    return normal, readonly


def context_tag(files: list[Upload], context: str, image: str) -> str:
    """An image's tag: a hash of its build context, so unchanged is never rebuilt."""
    h = hashlib.sha256()
    for f in files:
        if f.path.startswith(f"{context}/"):
            h.update(f.path.encode() + b"\0" + f.content + b"\0")
    return f"{image}:{h.hexdigest()[:16]}"


def nginx_tag(files: list[Upload]) -> str:
    """The proxy image's tag."""
    return context_tag(files, NGINX_CONTEXT_DIR, NGINX_IMAGE)


def token_tag(files: list[Upload]) -> str:
    """The token service image's tag."""
    return context_tag(files, TOKEND_CONTEXT_DIR, TOKEND_IMAGE)


@dataclass(frozen=True)
class RunSpec:
    """A container as deploy wants it; its hash is kept in a label to detect drift."""

    name: str
    image: str
    args: tuple[str, ...]
    # Networks joined after the first (``--network`` in ``args``), before it starts.
    more_networks: tuple[str, ...] = ()
    # What follows the image on the command line (the image's CMD when empty).
    command: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        parts: list[object] = [self.name, self.image, self.args]
        if self.more_networks:
            parts.append(self.more_networks)
        if self.command:
            parts.append(self.command)
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
            *s3_ca_args(inv),
        ),
        # S3 is outside the host: the registry joins the proxy's bridge to reach it, and
        # listens only on BACKEND's address (its config's http.addr).
        more_networks=(NETWORK,) if reg.storage.s3 else (),
        # The config's path, always: registry:3 images look in /etc/distribution by
        # default and would run their own config (no auth) without it.
        command=(REGISTRY_CONFIG,),
    )  # fmt: skip


def s3_ca_args(inv: Inventory) -> tuple[str, ...]:
    """The S3 service's private CA for the registry, if it has one: mounted, and named in
    SSL_CERT_FILE (Go's crypto/x509 reads it besides the system's CA folder)."""
    s3 = inv.registry.storage.s3
    if s3 is None or not s3.ca_file:
        return ()
    return ("-v", f"{S3_CA_FILE}:{S3_CA_MOUNT}:ro", "-e", f"SSL_CERT_FILE={S3_CA_MOUNT}")


def mirror_spec(inv: Inventory, config_digest: str) -> RunSpec | None:
    """The mirror container (None without ``registry.mirror``): the registry's image in
    proxy mode, on its own cache folder, with the config of that digest."""
    m = inv.registry.mirror
    if m is None:
        return None
    ca = ()
    if m.ca_file:
        ca = ("-e", f"SSL_CERT_FILE={REGISTRY_CONFIG_MOUNT}/{MIRROR_CA_NAME}")
    return RunSpec(
        MIRROR,
        inv.registry.images.registry,
        (
            "--network", BACKEND, "--network-alias", MIRROR_ALIAS,
            "--restart", "unless-stopped",
            "--label", f"{CONFIG_LABEL}={config_digest[:16]}",
            "-v", f"{m.data_dir}:{REGISTRY_DATA_MOUNT}",
            "-v", f"{mirror_config_dir(config_digest)}:{REGISTRY_CONFIG_MOUNT}:ro",
            *ca,
        ),
        # The upstream is outside the host: the mirror joins the proxy's bridge to reach
        # it, and listens only on BACKEND's address (its config's http.addr).
        more_networks=(NETWORK,),
        command=(REGISTRY_CONFIG,),
    )  # fmt: skip


def nginx_mounts() -> tuple[str, ...]:
    """The proxy's key and the gc flag's folder, as folders (a file mount would keep the
    old inode on replace)."""
    lay = render.CONTAINER
    return (
        "-v", f"{TLS_DIR}:{lay.tls_dir}:ro",
        "-v", f"{MAINTENANCE_DIR}:{lay.maintenance_dir}:ro",
    )  # fmt: skip


def nginx_spec(inv: Inventory, tag: str) -> RunSpec:
    return RunSpec(
        NGINX,
        tag,
        (
            "--network", NETWORK,
            "--restart", "unless-stopped",
            "-p", f"{inv.registry.port}:{render.CONTAINER.listen}",
            *mirror_port(inv),
            *nginx_mounts(),
        ),
        more_networks=(BACKEND,),
    )  # fmt: skip


def mirror_port(inv: Inventory) -> tuple[str, ...]:
    """nginx publishes the mirror's port too, when there is a mirror."""
    m = inv.registry.mirror
    return ("-p", f"{m.port}:{render.CONTAINER.mirror_listen}") if m else ()


def token_spec(tag: str) -> RunSpec:
    """The token service: non-root (its image's USER), read-only root, no capabilities,
    reachable only on BACKEND; its key, the rights and the passwords are mounted
    read-only."""
    return RunSpec(
        TOKEND,
        tag,
        (
            "--network", BACKEND, "--network-alias", TOKEND_ALIAS,
            "--restart", "unless-stopped",
            "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--group-add", str(PASSWORD_GID),
            "-v", f"{TOKEND_DIR}:{SIGNING_MOUNT}:ro",
            "-v", f"{RIGHTS_DIR}:{RIGHTS_MOUNT}:ro",
            "-v", f"{AUTH_DIR}:{AUTH_MOUNT}:ro",
        ),
    )  # fmt: skip
