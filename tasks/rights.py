"""Who may do what: each user's role and repository patterns (token auth).

Roles, each a superset of the one before: ``pull``; ``push`` (also pull);
``admin`` (also delete, and the catalog of every repository). Patterns name
repositories: an exact name (``shared/base``), everything under a folder
(``team-a/*``) or everything (``*``); outside them a user has nothing.

The local file is ``<state_dir>/rights.json`` (``fab adduser --role``, ``fab
setrole``); the inventory's ``users.access`` overrides it for the users it names.
A user in the password file with neither keeps ``push`` on ``*``, so nobody loses
anything on upgrade. What the hosts get (:func:`deployed_rights`) names every
user; the token service grants nothing to a name it lacks.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.errors import UsersError
from tasks.state import atomic_write, ensure_private_dir

if TYPE_CHECKING:
    from tasks.inventory import Inventory

ROLES = ("pull", "push", "admin")
DEFAULT_ROLE = "push"
EVERYTHING = "*"
_COMPONENT = r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*"
_PATTERN = re.compile(rf"^(?:\*|{_COMPONENT}(?:/{_COMPONENT})*(?:/\*)?)$")


@dataclass(frozen=True)
class Access:
    """One user's rights."""

    role: str = DEFAULT_ROLE
    repos: tuple[str, ...] = (EVERYTHING,)
    robot: bool = False

    def describe(self) -> str:
        kind = "robot " if self.robot else ""
        return f"{kind}{self.role} on {', '.join(self.repos)}"


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UsersError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    return role


def check_pattern(pattern: str) -> str:
    """A repository pattern, or UsersError saying what a pattern looks like."""
    if not _PATTERN.match(pattern):
        raise UsersError(
            f"{pattern!r} is not a repository pattern; use a name (shared/base), a folder "
            "(team-a/*) or * for every repository (lower-case letters, digits, . _ - /)"
        )
    return pattern


def parse_patterns(text: str) -> tuple[str, ...]:
    """``--repos 'team-a/*,shared/base'`` as a tuple, each checked; ``*`` when empty."""
    patterns = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    return tuple(check_pattern(p) for p in patterns) or (EVERYTHING,)


def covers(patterns: tuple[str, ...] | list[str], name: str) -> bool:
    """Whether a repository name is under one of the patterns: ``*`` everything,
    ``team-a/*`` everything below ``team-a/`` (any depth), else the exact name. The token
    service (``tokend.service.covers``) matches the same checked patterns with fnmatch."""
    return any(
        p in (EVERYTHING, name) or (p.endswith("/*") and name.startswith(p[:-1])) for p in patterns
    )


def rights_file(inv: Inventory) -> Path:
    return inv.state_path / "rights.json"


def load_local(inv: Inventory) -> dict[str, Access]:
    """The local rights file (empty when there is none yet)."""
    path = rights_file(inv)
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {
            name: Access(entry["role"], tuple(entry["repos"]), bool(entry.get("robot")))
            for name, entry in raw.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsersError(f"{path}: malformed rights file ({exc!r}); fix or remove it") from None


def save_local(inv: Inventory, rights: dict[str, Access]) -> bool:
    ensure_private_dir(inv.state_path)
    data = {name: asdict(rights[name]) for name in sorted(rights)}
    return atomic_write(rights_file(inv), json.dumps(data, indent=2) + "\n", mode=0o600)


def declared(inv: Inventory) -> dict[str, Access]:
    """The rights the inventory declares (``users.access``)."""
    return {
        name: Access(entry.role, tuple(entry.repos)) for name, entry in inv.users.access.items()
    }


def effective(inv: Inventory, names: list[str]) -> dict[str, Access]:
    """The rights of each of ``names``: the inventory's, else the local file's, else push on *."""
    local = load_local(inv)
    inventory = declared(inv)
    out = {}
    for name in names:
        access = inventory.get(name) or local.get(name) or Access()
        robot = local[name].robot if name in local else False
        out[name] = Access(access.role, access.repos, robot)
    return out


def set_access(inv: Inventory, name: str, access: Access) -> bool:
    """Record ``name``'s rights locally; True when that changed them. Refused for a user
    whose rights the inventory declares: the inventory is where they change."""
    if name in inv.users.access and declared(inv)[name] != Access(access.role, access.repos):
        raise UsersError(
            f"{inv.source}: users.access.{name} declares this user's rights; change them "
            "there and run 'fab deploy'"
        )
    local = load_local(inv)
    if local.get(name) == access:
        return False
    local[name] = access
    save_local(inv, local)
    return True


def forget(inv: Inventory, name: str) -> None:
    """Drop ``name`` from the local rights file (the user was removed)."""
    local = load_local(inv)
    if local.pop(name, None) is not None:
        save_local(inv, local)


def document(rights: dict[str, Access], service_user: str) -> bytes:
    """The rights file as the token service reads it; ``service_user`` (the deploy's own
    login) is an admin on everything."""
    users: dict[str, Any] = {
        name: {"role": a.role, "repos": list(a.repos)} for name, a in sorted(rights.items())
    }
    users[service_user] = {"role": "admin", "repos": [EVERYTHING]}
    return (json.dumps({"version": 1, "users": users}, indent=1, sort_keys=True) + "\n").encode()
