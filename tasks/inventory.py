"""The inventory: the registry's settings and the hosts, from one YAML file.

The file is ``inventory.yaml`` in the current directory, or the path in the
``REGISTRY_INVENTORY`` environment variable. It is validated as a whole before
any task acts on it; every mistake is reported as one line naming the file, the
key path and what is expected.

This module holds the model, ``load()`` and the ``inventory.check`` task; the safe
YAML loader and the one-line error messages are in ``tasks.inventory_file``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from cryptography import x509
from invoke import Collection, Context
from pydantic import (
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from tasks import rights
from tasks.cli import task
from tasks.errors import InventoryError, RegkitError
from tasks.inventory_checks import (
    after_load,
    check_common_name,
    check_data_dir,
    check_organization,
    check_own_name,
    check_registry_user,
    refuse_unseen,
)
from tasks.inventory_file import NoAliasLoader, Strict, format_error
from tasks.inventory_hosts import Host, Port, Role
from tasks.inventory_images import Images
from tasks.inventory_mirror import Mirror, apart
from tasks.inventory_storage import Storage

ENV_VAR = "REGISTRY_INVENTORY"
DEFAULT_PATH = "inventory.yaml"
MAX_BYTES = 1024 * 1024

KeyType = Literal["ec-p256", "rsa-2048", "rsa-4096"]

_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


class Registry(Strict):
    """What the registry is called, where it listens and keeps its data."""

    domain: str
    port: Port = 443
    extra_names: list[str] = []
    extra_ips: list[str] = []
    # Two folders deep at least, and no "." or ".." part: `rm -rf` and `docker -v` get it.
    data_dir: Annotated[
        str, StringConstraints(pattern=r"^(/(?!\.\.?(/|$))[A-Za-z0-9._-]+){2,}/?\Z")
    ] = "/var/lib/regkit/registry"
    images: Images = Images()
    storage: Storage = Storage()
    # A pull-through cache of Docker Hub beside the registry (tasks.inventory_mirror).
    mirror: Mirror | None = None

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        domain = check_own_name(v)
        check_common_name(domain, "the server certificate's common name (the domain)")
        return domain

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, v: str) -> str:
        return check_data_dir(v)

    @model_validator(mode="after")
    def _mirror_apart(self) -> Registry:
        apart(self.data_dir, self.mirror, self.port)
        return self

    @field_validator("extra_names")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        return [check_own_name(name, require_dot=False) for name in v]

    @field_validator("extra_ips")
    @classmethod
    def _ips(cls, v: list[str]) -> list[str]:
        out = []
        for ip in v:
            try:
                out.append(str(ipaddress.ip_address(ip)))
            except ValueError:
                raise ValueError(f"{ip!r} is not an IPv4 or IPv6 address") from None
        return out

    @property
    def address(self) -> str:
        """``domain`` or ``domain:port``: how Docker names this registry."""
        return self.domain if self.port == 443 else f"{self.domain}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.address}"

    @property
    def certs_d(self) -> str:
        """Where Docker looks for this registry's CA: no daemon restart needed."""
        return f"/etc/docker/certs.d/{self.address}/ca.crt"

    @property
    def mirror_address(self) -> str:
        """``domain:port`` of the mirror (an error without one)."""
        if self.mirror is None:
            raise RegkitError("registry.mirror is not set in the inventory")
        return f"{self.domain}:{self.mirror.port}"

    @property
    def mirror_url(self) -> str:
        """``https://domain:port`` of the mirror, as runtimes name it."""
        return f"https://{self.mirror_address}"


class Pki(Strict):
    """How keys and certificates are made."""

    key_type: KeyType = "ec-p256"
    organization: str = "regkit"
    ca_days: Annotated[int, Field(ge=30, le=36500)] = 3650
    server_days: Annotated[int, Field(ge=1, le=825)] = 397
    warn_days: Annotated[int, Field(ge=0, le=365)] = 30

    @field_validator("organization")
    @classmethod
    def _organization(cls, v: str) -> str:
        return check_organization(v)


def check_patterns(patterns: list[str]) -> list[str]:
    """Repository patterns (at least one), each as :func:`tasks.rights.check_pattern` wants."""
    if not patterns:
        raise ValueError("give at least one repository pattern (* for every repository)")
    try:
        return [rights.check_pattern(p) for p in patterns]
    except RegkitError as exc:
        raise ValueError(str(exc)) from None


class UserAccess(Strict):
    """A user's rights as the inventory declares them (never a password)."""

    role: Literal["pull", "push", "admin"] = "push"
    repos: list[str] = ["*"]

    @field_validator("repos")
    @classmethod
    def _repos(cls, v: list[str]) -> list[str]:
        return check_patterns(v)


class Users(Strict):
    """Rules for the registry's password file, and the rights the inventory declares."""

    bcrypt_rounds: Annotated[int, Field(ge=10, le=16)] = 12
    min_password_length: Annotated[int, Field(ge=8, le=128)] = 12
    access: dict[str, UserAccess] = {}

    @field_validator("access")
    @classmethod
    def _names(cls, v: dict[str, UserAccess]) -> dict[str, UserAccess]:
        for name in v:
            check_registry_user(name)
        return v


_DURATION = re.compile(r"(\d+)([hdw])")
DURATION_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}


def duration_seconds(text: str) -> int:
    """``12h``, ``30d`` or ``2w`` in seconds, or ValueError."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; use hours, days or weeks: 12h, 30d, 2w")
    return int(match.group(1)) * DURATION_UNITS[match.group(2)]


class RetentionRule(Strict):
    """Which tags of which repositories ``fab prune`` keeps; the rest are candidates."""

    repositories: list[str]
    keep_last: Annotated[int, Field(ge=0)] | None = None
    keep_newer_than: str | None = None
    keep_tags: list[str] = []
    delete_tags: list[str] = []

    @field_validator("repositories")
    @classmethod
    def _repositories(cls, v: list[str]) -> list[str]:
        return check_patterns(v)

    @field_validator("keep_newer_than")
    @classmethod
    def _age(cls, v: str | None) -> str | None:
        if v is not None:
            duration_seconds(v)
        return v

    @field_validator("keep_tags", "delete_tags")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return v


class Backup(Strict):
    """Where ``fab backup`` writes (relative to this file) and how many snapshots it keeps."""

    dir: str = ""
    keep: Annotated[int, Field(ge=0)] = 0


class Inventory(Strict):
    """The whole file."""

    registry: Registry
    pki: Pki = Pki()
    users: Users = Users()
    retention: list[RetentionRule] = []
    backup: Backup = Backup()
    state_dir: str = ".regkit"
    known_hosts: str | None = None
    hosts: dict[str, Host] = {}

    # Set by load(): where the file is, so relative paths resolve next to it.
    source: Path = Field(default=Path(DEFAULT_PATH), exclude=True)

    @field_validator("hosts")
    @classmethod
    def _aliases(cls, v: dict[str, Host]) -> dict[str, Host]:
        for alias in v:
            if not _ALIAS.fullmatch(alias):
                raise ValueError(
                    f"host alias {alias!r} is not valid (letters, digits, '.', '_', '-')"
                )
        return v

    def resolve(self, path: str) -> Path:
        """A path from the file, with ``~`` expanded, relative to the file's folder."""
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else (self.source.parent / p)

    def ca_pem(self, key: str, path: str, whose: str) -> bytes:
        """The PEM file a ``ca_file`` key names (``key``, its path in the file), checked to
        hold certificates; ``whose`` CA it is, for the message when it does not."""
        where = self.resolve(path)
        try:
            pem = where.read_bytes()
            x509.load_pem_x509_certificates(pem)
        except OSError as exc:
            raise InventoryError(
                f"{self.source}: {key}: cannot read {where} ({exc.strerror}); "
                f"give the PEM file of {whose} CA"
            ) from None
        except ValueError:
            raise InventoryError(
                f"{self.source}: {key}: {where} holds no PEM certificate; "
                f"give the PEM file of {whose} CA"
            ) from None
        return pem

    @property
    def state_path(self) -> Path:
        return self.resolve(self.state_dir)

    def host(self, alias: str) -> Host:
        """The host called ``alias``, or an error listing the known aliases."""
        try:
            return self.hosts[alias]
        except KeyError:
            known = ", ".join(sorted(self.hosts)) or "none"
            raise InventoryError(
                f"{self.source}: hosts.{alias}: unknown host alias; known aliases: {known}. "
                f"Add it under 'hosts:' or check the -H argument"
            ) from None

    def with_role(self, role: Role) -> list[str]:
        """Aliases of every host with ``role``, in file order."""
        return [alias for alias, h in self.hosts.items() if h.role == role]


def inventory_path() -> Path:
    """The inventory file to use: ``$REGISTRY_INVENTORY`` or ./inventory.yaml."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_PATH)


def load(path: Path | None = None) -> Inventory:
    """Read and validate the inventory, or raise InventoryError with one clear line."""
    path = path or inventory_path()
    hint = f"set {ENV_VAR} or create {DEFAULT_PATH} (see the README)"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InventoryError(f"{path}: inventory file not found; {hint}") from None
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read the inventory: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise InventoryError(
            f"{path}: the inventory is {len(raw)} bytes; more than {MAX_BYTES} is refused"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryError(
            f"{path}: not valid UTF-8 (byte {exc.start}); save the file as UTF-8"
        ) from None
    try:
        data = yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise InventoryError(f"{path}: YAML error at {where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise InventoryError(f"{path}: YAML error: {exc}") from None
    if not isinstance(data, dict):
        raise InventoryError(
            f"{path}: expected a mapping with at least 'registry:' and 'hosts:' at the top level"
        )
    if "source" in data:
        raise InventoryError(f"{path}: source: unknown key")
    refuse_unseen(path, data)
    try:
        inv = Inventory.model_validate({**data, "source": path})
    except ValidationError as exc:
        raise InventoryError(format_error(path, exc, Inventory)) from None
    after_load(inv)
    return inv


@task
def check(c: Context) -> None:
    """Validate the inventory and list its hosts."""
    inv = load()
    reg = inv.registry
    print(f"{inv.source}: valid")
    print(f"registry: {reg.url} (data in {reg.data_dir} on the host)")
    images = reg.images
    print(f"images:   registry {images.registry}, nginx {images.nginx}, token {images.token}")
    print(f"state:    {inv.state_path}")
    for alias, h in inv.hosts.items():
        target = f"{h.user + '@' if h.user else ''}{h.hostname or alias}"
        target += f":{h.port}" if h.port else ""
        pinned = "host key pinned" if h.host_key else "host key from known_hosts"
        print(f"  {alias:<12} {h.role:<8} {h.flavor or 'detect':<11} {target} ({pinned})")


# Last: inventory_init's task reads this module's load() when it runs.
from tasks.inventory_init import init  # noqa: E402

ns = Collection("inventory", check, init)
