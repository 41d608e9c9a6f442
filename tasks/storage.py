"""``invoke storage.*``: the S3 service's keys, kept in the local state.

The inventory says where the bucket is (``registry.storage``); the keys live only
in ``<state_dir>/s3-credentials.json`` (0600), and reach a registry host only
inside its 0600 config, mounted read-only. They are never in argv, in output or
in an image layer.
"""

from __future__ import annotations

import getpass
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from invoke import Collection, Context

from tasks import inventory
from tasks.cli import task
from tasks.errors import RegkitError, StateError
from tasks.inventory import Inventory
from tasks.report import Report
from tasks.state import atomic_write, ensure_private_dir

CREDENTIALS = "s3-credentials.json"


@dataclass(frozen=True)
class S3Keys:
    """An S3 access key and its secret (never shown: not in repr either)."""

    access_key: str
    secret_key: str = field(repr=False)

    @property
    def shown(self) -> str:
        """The access key as output may show it: its last four characters."""
        return f"…{self.access_key[-4:]}"


def keys_path(inv: Inventory) -> Path:
    return inv.state_path / CREDENTIALS


def check_keys(access_key: str, secret_key: str) -> S3Keys:
    """Both keys, each one word; or an error saying which is wrong."""
    for what, value in (("access key", access_key), ("secret key", secret_key)):
        if not value:
            raise RegkitError(f"the S3 {what} is empty")
        if any(ch.isspace() for ch in value) or not value.isprintable():
            raise RegkitError(f"the S3 {what} holds spaces or control characters")
    return S3Keys(access_key, secret_key)


def read_keys(inv: Inventory) -> S3Keys:
    """The keys in the local state, or an error saying how to store them."""
    path = keys_path(inv)
    try:
        data = json.loads(path.read_text())
        return check_keys(str(data["access_key"]), str(data["secret_key"]))
    except FileNotFoundError:
        raise StateError(
            f"no S3 keys in {path}; store them with `invoke storage.set-credentials`"
        ) from None
    except (ValueError, KeyError, TypeError, RegkitError):
        raise StateError(
            f"{path}: not the S3 keys this tool writes; store them again with "
            "`invoke storage.set-credentials`"
        ) from None


def write_keys(inv: Inventory, keys: S3Keys) -> bool:
    """Store ``keys`` (0600); False when the same keys were there already."""
    ensure_private_dir(inv.state_path)
    text = json.dumps({"access_key": keys.access_key, "secret_key": keys.secret_key}) + "\n"
    return atomic_write(keys_path(inv), text, mode=0o600)


def ask_keys() -> S3Keys:
    """At a terminal: prompt (the secret unechoed). Else: two lines on stdin, access key
    first, then the secret."""
    if sys.stdin.isatty():
        return check_keys(input("S3 access key: ").strip(), getpass.getpass("S3 secret key: "))
    lines = sys.stdin.read().splitlines()
    if len(lines) < 2:
        raise RegkitError(
            "give two lines on standard input: the S3 access key, then the secret key"
        )
    return check_keys(lines[0].strip(), lines[1].strip())


def s3_ca(inv: Inventory) -> bytes | None:
    """The PEM of ``registry.storage.s3.ca_file``, checked to hold certificates; None
    without one."""
    s3 = inv.registry.storage.s3
    if s3 is None or not s3.ca_file:
        return None
    return inv.ca_pem("registry.storage.s3.ca_file", s3.ca_file, "the S3 service's")


def needs_filesystem(inv: Inventory, what: str) -> None:
    """Refuse ``what`` (a task that reads or writes the host's data folder) on S3 storage."""
    s3 = inv.registry.storage.s3
    if s3 is not None:
        raise RegkitError(
            f"{inv.source}: registry.storage.driver is s3 (bucket {s3.bucket} at {s3.endpoint}): "
            f"{what} works on a registry that keeps its data on the host's disk; with S3 "
            "the data is already off the host: back the bucket up with the S3 service's "
            "own tools (versioning, replication to another site)"
        )


def sharing(inv: Inventory) -> list[str]:
    """The registry hosts that share one bucket (replicas), or [] when each host keeps
    its own data: a garbage collection must make all of them read-only, since a push
    landing on any of them while blobs are deleted could lose a blob."""
    hosts = inv.with_role("registry")
    return hosts if inv.registry.storage.s3 is not None and len(hosts) > 1 else []


@task(name="set-credentials")
def set_credentials(c: Context) -> None:
    """Store the S3 access and secret key for registry.storage.s3 (local state, 0600).

    At a terminal it asks for both (the secret unechoed); otherwise it reads two
    lines from standard input: the access key, then the secret key. A deploy puts
    them in each registry host's 0600 config; rotate them by storing new ones and
    deploying again.
    """
    inv = inventory.load()
    keys = ask_keys()
    report = Report()
    where = f"{keys_path(inv)} (0600), access key {keys.shown}"
    if write_keys(inv, keys):
        report.changed("local", "S3 keys", f"stored in {where}")
    else:
        report.unchanged("local", "S3 keys", f"the same ones are in {where}")
    if inv.registry.storage.driver != "s3":
        report.info("note: registry.storage.driver is filesystem; the keys wait for driver: s3")
    report.summary()


ns = Collection("storage", set_credentials)
