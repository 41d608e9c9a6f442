"""Inventory values regkit could not honour, or that would do harm, refused in one line.

Used by the models in :mod:`tasks.inventory` (and its ``inventory_*`` parts) as field
checks that raise ``ValueError``, and by ``load()`` for what needs the whole file or the
local disk (``after_load``, which raises :class:`~tasks.errors.InventoryError` naming the
file and key):

* no control or invisible formatting character in any key or value;
* a registry's names: no wildcard and no public suffix (``com``, ``co.uk``,
  ``github.io``, from the Public Suffix List that ``publicsuffixlist`` bundles);
* X.509's bounds (RFC 5280, appendix A.1) on what the inventory puts in a subject;
* system folders are never the registry's data nor the local state;
* a host's ``hostname`` is a DNS name or an IP address, its ``user`` a POSIX user name,
  its ``key_file`` an SSH private key and ``known_hosts`` a regular file;
* registry user names (here and in ``tasks.users``): an ASCII allow-list.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import unicodedata
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from tasks.errors import InventoryError

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

    from tasks.inventory import Inventory

# Control characters (escape sequences, newlines), invisible formatting characters
# (bidirectional overrides, zero-width ones) and line/paragraph separators.
_UNSEEN = ("Cc", "Cf", "Zl", "Zp")


def unseen(text: str) -> str | None:
    """The first character of ``text`` that a terminal would not show as itself, or None."""
    return next((ch for ch in text if unicodedata.category(ch) in _UNSEEN), None)


def _walk(node: Any, key: str) -> tuple[str, str] | None:
    """(key path, character) of the first unseen character in ``node``'s keys or strings."""
    if isinstance(node, str):
        ch = unseen(node)
        return (key, ch) if ch else None
    items: list[tuple[Any, Any]] = []
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    for name, value in items:
        if isinstance(name, str) and (ch := unseen(name)):
            return (f"{key}.{name!r}" if key else repr(name), ch)
        found = _walk(value, f"{key}.{name}" if key else str(name))
        if found:
            return found
    return None


def refuse_unseen(path: Path, data: object) -> None:
    """InventoryError for the first key or value holding a control character."""
    found = _walk(data, "")
    if found:
        key, ch = found
        raise InventoryError(
            f"{path}: {key or '(top level)'}: holds the control character {ch!r}; "
            "a key or value is one line of visible text"
        )


_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def check_dns_name(name: str, require_dot: bool = True) -> str:
    """Return ``name`` lower-cased if it is a valid DNS name, else raise ValueError.

    The registry's domain needs a dot: Docker reads a single-label name as a
    Docker Hub namespace. Extra names may be short names (used with a port).
    """
    lowered = name.lower()
    if len(lowered) > 253:
        raise ValueError(f"{name!r} is longer than 253 characters")
    labels = lowered.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"{name!r} is not a valid DNS name (letters, digits and inner hyphens, "
            "dot-separated, e.g. registry.example.com)"
        )
    if require_dot and len(labels) < 2:
        raise ValueError(
            f"{name!r} has no dot; Docker would read a single-label name as a Docker Hub "
            "namespace, so use a fully qualified name such as registry.example.com"
        )
    return lowered


# X.509 upper bounds (RFC 5280, appendix A.1: ub-common-name, ub-organization-name).
UB_COMMON_NAME = 64
UB_ORGANIZATION_NAME = 64
# The common names regkit's certificates get from the inventory: the CA's
# (tasks.certificates.build_ca), the server's is the domain (build_server_cert), and with
# a mirror its client CA's and each host's client certificate (tasks.mirror). The unit
# test of these limits builds each certificate at them.
CA_COMMON_NAME = "{organization} registry CA for {domain}"
MIRROR_CA_COMMON_NAME = "regkit mirror clients of {domain}"
MIRROR_CLIENT_COMMON_NAME = "regkit mirror client {alias}"


def check_organization(value: str) -> str:
    """``pki.organization``: 1 to 64 characters (ValueError otherwise)."""
    if not value.strip():
        raise ValueError("the organization is empty; give a name such as 'Example Co'")
    if len(value) > UB_ORGANIZATION_NAME:
        raise ValueError(
            f"{len(value)} characters; X.509 allows at most {UB_ORGANIZATION_NAME} in an "
            "organization name (RFC 5280 ub-organization-name)"
        )
    return value


def check_common_name(value: str, what: str) -> None:
    """ValueError when ``value`` (the common name ``what`` gets) is over 64 characters."""
    if len(value) > UB_COMMON_NAME:
        raise ValueError(
            f"{what} would be {value!r}, {len(value)} characters; X.509 allows at most "
            f"{UB_COMMON_NAME} in a common name (RFC 5280 ub-common-name)"
        )


@functools.cache
def _suffixes() -> PublicSuffixList:
    from publicsuffixlist import PublicSuffixList

    # accept_unknown=False: a short name the list does not know (registry, localhost)
    # is a host's name, not a suffix.
    return PublicSuffixList(accept_unknown=False)


def check_own_name(name: str, require_dot: bool = True) -> str:
    """``name`` lower-cased if a certificate of the registry's may carry it: a DNS name
    (:func:`check_dns_name`), no wildcard and no public suffix (ValueError)."""
    if "*" in name:
        raise ValueError(
            f"{name!r} is a wildcard, which would make the certificate good for every name "
            "under it; list each name clients use"
        )
    lowered = check_dns_name(name, require_dot)
    if _suffixes().is_public(lowered):
        raise ValueError(
            f"{name!r} is a public suffix (on the Public Suffix List), shared by everyone "
            "under it; give a name of your own, such as registry.example.com"
        )
    return lowered


# Folders of the system itself: never the registry's data (mounted read-write into its
# container, deleted by undeploy --purge-data) nor the local state (kept private).
SYSTEM_DIRS = frozenset(
    (
        *("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64"),
        *("/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys"),
        *("/usr", "/usr/bin", "/usr/lib", "/usr/local", "/usr/sbin", "/usr/share"),
        *("/var", "/var/cache", "/var/lib", "/var/lib/docker", "/var/lib/containerd"),
        *("/var/log", "/var/mail", "/var/opt", "/var/run", "/var/spool"),
        *("/etc/ssl", "/etc/docker", "/etc/ssh", "/etc/regkit"),
        *("/tmp", "/var/tmp"),  # noqa: S108 - refused, not used
    )
)
# Nothing of regkit's goes anywhere under these: pseudo file systems, the system's own
# files, what a reboot empties, Docker's and containerd's stores.
_SYSTEM_TREES = (
    *("/proc", "/sys", "/dev", "/boot", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32"),
    *("/lib64", "/run", "/var/run", "/var/lib/docker", "/var/lib/containerd"),
    *("/tmp", "/var/tmp"),  # noqa: S108 - refused, not used
)
_PSEUDO_TREES = ("/proc", "/sys", "/dev")


def _system(path: PurePosixPath, trees: tuple[str, ...]) -> str | None:
    """The system folder ``path`` is, or is inside (from ``trees``), or None."""
    if str(path) in SYSTEM_DIRS:
        return str(path)
    return next((t for t in trees if path.is_relative_to(t)), None)


def check_data_dir(value: str) -> str:
    """A host's data folder (registry or mirror): never a system folder (ValueError)."""
    system = _system(PurePosixPath(value), _SYSTEM_TREES)
    if system:
        where = "a system folder" if system == value.rstrip("/") else f"inside {system}"
        raise ValueError(
            f"{value!r} is {where}; the registry mounts its data folder read-write and "
            "undeploy --purge-data deletes it: give a folder of its own, such as "
            "/var/lib/regkit/registry"
        )
    return value


def check_state_dir(inv: Inventory) -> None:
    """``state_dir``, as written and resolved, is no system folder and not the home
    folder (InventoryError)."""
    written, where = Path(os.path.abspath(inv.state_path)), inv.state_path.resolve()
    try:
        home = Path.home().resolve()
    except (RuntimeError, KeyError):
        home = None
    for path in (written, where):
        system = "the home folder" if path == home else None
        if not system and _system(PurePosixPath(path), _PSEUDO_TREES):
            system = "a system folder"
        if system:
            raise InventoryError(
                f"{inv.source}: state_dir: {inv.state_dir!r} is {where}, {system}; regkit "
                "keeps its CA key and passwords in a private folder of its own: give a new "
                "one, such as .regkit"
            )


def _host_port(value: str) -> bool:
    """Whether ``value`` reads as ``host:port`` (not an IPv6 address)."""
    host, sep, port = value.rpartition(":")
    return bool(sep and port.isdigit() and host and ":" not in host.strip("[]"))


def check_hostname(value: str) -> str:
    """``hosts.*.hostname``: a DNS name or an IP address, nothing else (ValueError)."""
    if "@" in value or _host_port(value) or value.startswith("["):
        raise ValueError(
            f"{value!r} is not a host name; put the user in 'user:' and the port in "
            "'port:' (hostname is a DNS name or an IP address only)"
        )
    try:
        ipaddress.ip_address(value)
    except ValueError:
        try:
            check_dns_name(value, require_dot=False)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a DNS name or an IP address (letters, digits, inner "
                "hyphens and dots, e.g. registry.example.com, or e.g. 192.0.2.10)"
            ) from None
    return value


# A user name every POSIX system takes: the portable file name characters, no leading
# '-', as long as Linux's useradd allows.
_POSIX_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,31}")


def check_ssh_user(value: str) -> str:
    """``hosts.*.user``: a POSIX user name (ValueError otherwise)."""
    if not _POSIX_USER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a user name regkit takes: letters, digits, '.', '_' and '-', "
            "not starting with '-' or '.', at most 32 characters"
        )
    return value


# Registry logins: what nginx's password file, Docker's config and the token service's
# rights file all read the same way; ASCII only, so no look-alike or NFC/NFD twins.
REGISTRY_USER = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
REGISTRY_USER_RULE = (
    "use lowercase letters a-z, digits, '.', '_' and '-', starting with a letter or "
    "digit, at most 64 characters"
)


def check_registry_user(name: str) -> str:
    """A registry user name on the allow-list, or ValueError saying what is allowed."""
    if name.startswith("#"):
        raise ValueError(
            f"the username {name!r} starts with '#', which makes its line a comment to "
            f"nginx; {REGISTRY_USER_RULE}"
        )
    if not REGISTRY_USER.fullmatch(name):
        raise ValueError(f"the username {name!r} is not allowed; {REGISTRY_USER_RULE}")
    return name


def _check_key_file(inv: Inventory, alias: str, value: str) -> None:
    """A ``key_file`` that is there must be a file holding an SSH private key."""
    where = inv.resolve(value)
    key = f"{inv.source}: hosts.{alias}.key_file"
    if not where.exists():
        return  # as before: SSH says so when it is needed
    if not where.is_file():
        raise InventoryError(f"{key}: {where} is not a regular file; give the SSH private key")
    try:
        with where.open("rb") as f:
            first = f.readline(200)
    except OSError as exc:
        raise InventoryError(f"{key}: cannot read {where} ({exc.strerror})") from None
    if not (first.startswith(b"-----BEGIN ") and b"PRIVATE KEY" in first):
        raise InventoryError(
            f"{key}: {where} does not hold an SSH private key (its first line is not "
            "'-----BEGIN ... PRIVATE KEY-----'); give the key ssh -i would use"
        )


def _check_common_names(inv: Inventory) -> None:
    reg, org = inv.registry, inv.pki.organization
    try:
        ca = CA_COMMON_NAME.format(organization=org, domain=reg.domain)
        check_common_name(ca, "the CA's common name")
    except ValueError as exc:
        raise InventoryError(
            f"{inv.source}: pki.organization: {exc}: shorten the organization (or the domain)"
        ) from None
    if reg.mirror is None:
        return
    try:
        check_common_name(
            MIRROR_CA_COMMON_NAME.format(domain=reg.domain), "the mirror's client CA's name"
        )
    except ValueError as exc:
        raise InventoryError(f"{inv.source}: registry.domain: {exc}") from None
    for alias in inv.hosts:
        try:
            name = MIRROR_CLIENT_COMMON_NAME.format(alias=alias)
            check_common_name(name, "its mirror client certificate's name")
        except ValueError as exc:
            raise InventoryError(f"{inv.source}: hosts.{alias}: {exc}") from None


def after_load(inv: Inventory) -> None:
    """What needs the whole inventory or the local disk (InventoryError, one line)."""
    _check_common_names(inv)
    check_state_dir(inv)
    for alias, host in inv.hosts.items():
        if host.key_file:
            _check_key_file(inv, alias, host.key_file)
    if inv.known_hosts:
        where = inv.resolve(inv.known_hosts)
        if where.exists() and not where.is_file():
            raise InventoryError(
                f"{inv.source}: known_hosts: {where} is not a regular file; give a "
                "known_hosts file (or pin each host's key with host_key)"
            )
