"""What ``fab migrate-storage`` runs and decides, without a host (pure; unit-tested).

Where the registry's tree goes in the bucket, curl's config for it, the scripts
that copy and check it, what the facts of the registry hosts allow, and which tags
a move lost.
"""

from __future__ import annotations

from shlex import quote

from tasks import scripts
from tasks.errors import RemoteError
from tasks.inventory import Inventory
from tasks.inventory_storage import S3, Storage
from tasks.layout import CONFIG_LABEL, REGISTRY, REGISTRY_CONFIGS, S3_CA_FILE
from tasks.storage import S3Keys

# Where the S3 keys wait for curl on the host while the copy runs (a tmpfs, 0600).
CURL_CONFIG = "/run/regkit-migrate.curl"
# SigV4 signs the payload's hash: this is the empty body's, for HEAD requests.
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

Tags = dict[str, str]  # "repository:tag" -> digest


def bucket_url(s3: S3) -> str:
    """The URL of the registry's tree in the bucket (path style, as the registry uses)."""
    root = s3.root_directory.strip("/")
    return f"{s3.endpoint}/{s3.bucket}{'/' + root if root else ''}/docker/registry/v2"


def curl_string(value: str) -> str:
    """``value`` as a quoted string in curl's config: backslash and double quote escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def curl_config(s3: S3, keys: S3Keys) -> bytes:
    """curl's config for the bucket: the keys and SigV4 (a 0600 file, never argv), and
    the service's private CA, if it has one."""
    lines = [
        f"user = {curl_string(f'{keys.access_key}:{keys.secret_key}')}",
        f"aws-sigv4 = {curl_string(f'aws:amz:{s3.region}:s3')}",
    ]
    if s3.ca_file:
        lines.append(f"cacert = {curl_string(S3_CA_FILE)}")
    return ("\n".join(lines) + "\n").encode()


def copy_script(inv: Inventory, s3: S3, mode: str) -> str:
    """``copy``: verify and upload the tree; ``check``: every file is in the bucket, with
    its size."""
    return scripts.script(
        "migrate-copy",
        mode=mode,
        data_dir=inv.registry.data_dir,
        base=bucket_url(s3),
        config=CURL_CONFIG,
        empty_sha256=EMPTY_SHA256,
    )


def remove_config() -> str:
    return f"rm -f {quote(CURL_CONFIG)}"


def delete_tree(inv: Inventory) -> str:
    """Delete the registry's tree on the disk (the data folder itself stays, empty)."""
    return f"rm -rf {quote(inv.registry.data_dir + '/docker')}"


def facts_script(inv: Inventory) -> str:
    """Where the running registry keeps its data (its staged config says), and how much
    is on the disk."""
    return scripts.script(
        "migrate-facts",
        registry=REGISTRY,
        label_format=f'{{{{index .Config.Labels "{CONFIG_LABEL}"}}}}',
        configs=REGISTRY_CONFIGS,
        data_dir=inv.registry.data_dir,
    )


def on_s3(values: dict[str, str]) -> bool:
    return values.get("driver") == "s3"


def on_disk(inv: Inventory) -> Inventory:
    """The inventory as a host still on its disk runs it (driver filesystem): what a
    read-only restart of that host's registry keeps (its networks and mounts)."""
    return inv.model_copy(
        update={"registry": inv.registry.model_copy(update={"storage": Storage()})}
    )


def others_allow(alias: str, others: dict[str, dict[str, str]], bucket: str) -> None:
    """Refuse, before any change, a move that could lose images: another registry host
    that already serves the bucket (its pushes would be turned back by the copy), or
    that keeps images of its own on its disk (a move takes one host's)."""
    for other, values in sorted(others.items()):
        if on_s3(values):
            raise RemoteError(
                f"{alias}: {other} already serves bucket {bucket}: copying {alias}'s disk "
                f"over it could turn back tags pushed there since; stop {other} "
                f"('fab -H {other} undeploy') and run this again"
            )
        if values.get("files"):
            raise RemoteError(
                f"{alias}: {other} also keeps images on its disk ({values['files']} files), "
                f"which no registry would serve once every host is on the bucket: back them "
                f"up ('fab -H {other} backup') and empty its data folder, or give {other} "
                "another role, then run this again"
            )


def differences(before: Tags, after: Tags) -> list[str]:
    """The tags that are missing or point elsewhere after the move."""
    out = []
    for name, digest in sorted(before.items()):
        now = after.get(name)
        if now != digest:
            out.append(f"{name} ({'missing' if now is None else now[:19]}, was {digest[:19]})")
    return out
