"""Who may push: the registry's password file, kept locally with libpass (bcrypt).

The file is ``<state_dir>/htpasswd`` (0600), in Apache's htpasswd format (what
``htpasswd -B`` writes and the token service reads), every entry bcrypt (``$2y$``).
Passwords come from a prompt (asked twice) or from standard input, never from the
command line.
"""

from __future__ import annotations

import getpass
import secrets
import sys
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from invoke import Collection, Context

from tasks import inventory
from tasks.cli import confirm, read_secret_stdin, task
from tasks.errors import StateError, UsersError
from tasks.inventory import Inventory
from tasks.inventory_checks import REGISTRY_USER_RULE, check_registry_user
from tasks.report import Report
from tasks.state import atomic_write, ensure_private_dir

if TYPE_CHECKING:
    from passlib.apache import HtpasswdFile
    from passlib.context import CryptContext

# libpass is imported where a hash is made or read: loading it tests the bcrypt
# backend (about 35 ms), which a deploy with nothing to change does without.

MAX_USERNAME = 64
BCRYPT_MAX_BYTES = 72
# The deploy's own login, used to prove each deploy and to read the catalog.
PROBE_USER = "regkit-probe"
# The probe's password is 256 random bits: a slow hash adds nothing against
# guessing it, so its entry uses a low cost and its logins are fast. Robots' tokens
# are as random, and hashed at the same cost. (A wrong password for either still
# costs a check at the file's highest cost: the token service's stand-in.)
PROBE_ROUNDS = 5


def password_file(inv: Inventory) -> Path:
    return inv.state_path / "htpasswd"


def check_username(name: str) -> str:
    """Return ``name`` if nginx and Docker can use it as a login, else raise UsersError."""
    if not name:
        raise UsersError("the username is empty")
    if len(name) > MAX_USERNAME:
        raise UsersError(f"the username is longer than {MAX_USERNAME} characters")
    if name == PROBE_USER:
        raise UsersError(f"{PROBE_USER!r} is reserved for the deploy's own push/pull check")
    if ":" in name:
        raise UsersError(f"the username {name!r} contains ':', which separates fields in htpasswd")
    for ch in name:
        if ch.isspace() or unicodedata.category(ch).startswith("C"):
            raise UsersError(
                f"the username {name!r} contains whitespace or a control character; "
                f"{REGISTRY_USER_RULE}"
            )
    try:
        return check_registry_user(name)
    except ValueError as exc:
        raise UsersError(str(exc)) from None


def check_removal(inv: Inventory, name: str) -> str:
    """``name`` to remove: one in the password file (whatever an older regkit let in),
    else a name :func:`check_username` takes."""
    return name if name in names(inv) else check_username(name)


def check_password(password: str, min_length: int) -> str:
    """Return ``password`` if it meets the rules, else raise UsersError (never echoing it)."""
    if not password:
        raise UsersError("the password is empty")
    if len(password) < min_length:
        raise UsersError(
            f"the password is too short ({len(password)} characters); use at least {min_length}"
        )
    if len(password.encode()) > BCRYPT_MAX_BYTES:
        raise UsersError(
            f"the password is longer than {BCRYPT_MAX_BYTES} bytes, which bcrypt cannot use; "
            "choose a shorter one"
        )
    if any(unicodedata.category(ch) == "Cc" for ch in password):
        raise UsersError("the password contains a control character")
    return password


def _context(inv: Inventory) -> CryptContext:
    from passlib.apache import htpasswd_context

    return htpasswd_context.copy(
        default="bcrypt", bcrypt__rounds=inv.users.bcrypt_rounds, bcrypt__ident="2y"
    )


def load_empty(inv: Inventory) -> HtpasswdFile:
    """A new, empty password file that hashes with bcrypt."""
    from passlib.apache import HtpasswdFile

    return HtpasswdFile(context=_context(inv))


def load(inv: Inventory) -> HtpasswdFile:
    """The password file (empty when there is none yet), hashing new entries with bcrypt."""
    path = password_file(inv)
    if not path.exists():
        return load_empty(inv)
    from passlib.apache import HtpasswdFile

    try:
        return HtpasswdFile.from_string(path.read_bytes(), context=_context(inv))
    except ValueError as exc:
        raise UsersError(f"{path}: malformed password file ({exc}); fix or remove it") from None


def save(inv: Inventory, htpasswd: HtpasswdFile) -> bool:
    """Write the password file atomically at 0600; True when it changed."""
    ensure_private_dir(inv.state_path)
    return atomic_write(password_file(inv), htpasswd.to_string(), mode=0o600)


def scheme(htpasswd: HtpasswdFile, user: str) -> str:
    """The hash scheme of ``user``'s entry, e.g. ``bcrypt``."""
    from passlib.apache import htpasswd_context

    return htpasswd_context.identify(htpasswd.get_hash(user)) or "unknown"


def set_password(inv: Inventory, username: str, password: str, rounds: int = 0) -> str:
    """Add or update a user (bcrypt at ``rounds``, else the inventory's cost); returns
    "added" or "updated"."""
    check_username(username)
    check_password(password, inv.users.min_password_length)
    htpasswd = load(inv)
    if rounds:
        htpasswd.context = htpasswd.context.copy(bcrypt__rounds=rounds)
    existed = htpasswd.set_password(username, password)
    save(inv, htpasswd)
    return "updated" if existed else "added"


def new_robot_token() -> str:
    """A robot's secret: 256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def remove(inv: Inventory, username: str) -> None:
    """Remove a user; the last user is never removed."""
    htpasswd = load(inv)
    if username not in htpasswd.users():
        known = ", ".join(sorted(htpasswd.users())) or "none"
        raise UsersError(f"no user {username!r} in {password_file(inv)} (users: {known})")
    if len(htpasswd.users()) == 1:
        raise UsersError(
            f"{username!r} is the last user; a registry nobody can log into is refused. "
            "Add another user first"
        )
    htpasswd.delete(username)
    save(inv, htpasswd)


def _probe_paths(inv: Inventory) -> tuple[Path, Path]:
    return inv.state_path / "probe-password", inv.state_path / "probe.htpasswd"


def has_probe_credential(inv: Inventory) -> bool:
    """Whether a deploy from this state made the probe's login."""
    return all(path.exists() for path in _probe_paths(inv))


def ensure_probe_credential(inv: Inventory) -> None:
    """Make the deploy probe's password and htpasswd line once; then keep them (like Harbor)."""
    ensure_private_dir(inv.state_path)
    pw_path, line_path = _probe_paths(inv)
    if not pw_path.exists():
        atomic_write(pw_path, secrets.token_urlsafe(32), mode=0o600)
        line_path.unlink(missing_ok=True)
    password = pw_path.read_text().strip()
    prefix = f"{PROBE_USER}:$2y${PROBE_ROUNDS:02d}$"
    if not line_path.exists() or not line_path.read_text().startswith(prefix):
        from passlib.apache import HtpasswdFile, htpasswd_context

        context = htpasswd_context.copy(
            default="bcrypt", bcrypt__rounds=PROBE_ROUNDS, bcrypt__ident="2y"
        )
        htpasswd = HtpasswdFile(context=context)
        htpasswd.set_password(PROBE_USER, password)
        atomic_write(line_path, htpasswd.to_string(), mode=0o600)


def probe_credential(inv: Inventory) -> tuple[str, str]:
    """The deploy probe's password and htpasswd line (read only: a deploy makes them)."""
    pw_path, line_path = _probe_paths(inv)
    if not has_probe_credential(inv):
        raise StateError(f"{inv.state_path}: no deploy login here yet; run 'fab deploy' first")
    return pw_path.read_text().strip(), line_path.read_text()


def names(inv: Inventory) -> list[str]:
    """The users in the local password file, in file order (read as text: no libpass)."""
    path = password_file(inv)
    text = path.read_text() if path.exists() else ""
    return [
        line.split(":", 1)[0]
        for line in text.splitlines()
        if line.strip() and not line.startswith("#") and ":" in line
    ]


def deployed_htpasswd(inv: Inventory) -> bytes:
    """What the registry hosts get: every user, plus the deploy probe's line.

    The file is read as text (it is libpass's own output): every line that is not
    blank or a comment must be ``user:hash``.
    """
    path = password_file(inv)
    text = path.read_bytes() if path.exists() else b""
    entries = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith(b"#"):
            continue
        if b":" not in line:
            raise UsersError(
                f"{path}: malformed password file (line {number} is not user:hash); "
                "fix or remove it"
            )
        name, _, hashed = line.partition(b":")
        if not hashed.startswith((b"$2a$", b"$2b$", b"$2y$")):
            raise UsersError(
                f"{path}: line {number} ({name.decode(errors='replace')!r}) is not a bcrypt "
                "hash, and the token service checks bcrypt only; set its password again "
                "with 'invoke users.add' (or remove it)"
            )
        entries += 1
    if not entries:
        raise UsersError(
            f"{path}: no users yet; add one first with 'invoke users.add' "
            "(a registry nobody can log into is of no use)"
        )
    if not text.endswith(b"\n"):
        text += b"\n"
    return text + probe_credential(inv)[1].encode()


def ask_username(username: str, password_stdin: bool) -> str:
    """``username`` if given, else asked at the terminal; checked either way."""
    if not username:
        if password_stdin or not sys.stdin.isatty():
            raise UsersError("give --username when the password comes from standard input")
        username = input("Username: ").strip()
    return check_username(username)


def confirm_removal(username: str, yes: bool) -> None:
    """Ask before removing a user, unless ``yes``."""
    if not yes:
        confirm(
            f"Remove user {username!r}?", "confirmation needed: add --yes when not at a terminal"
        )


def ask_password(min_length: int, from_stdin: bool) -> str:
    """A new password: from stdin, or asked twice at the terminal."""
    if from_stdin:
        return check_password(read_secret_stdin("password"), min_length)
    first = check_password(getpass.getpass("Password: "), min_length)
    if getpass.getpass("Password (again): ") != first:
        raise UsersError("the two passwords differ; nothing was changed")
    return first


@task(
    help={
        "username": "Login name (asked when not given).",
        "password-stdin": "Read the password from standard input instead of asking.",
    }
)
def add(c: Context, username: str = "", password_stdin: bool = False) -> None:
    """Add a registry user, or change a user's password, in the local password file."""
    inv = inventory.load()
    username = ask_username(username, password_stdin)
    password = ask_password(inv.users.min_password_length, password_stdin)
    outcome = set_password(inv, username, password)
    Report().changed("local", f"user {username}", f"{outcome}, bcrypt")


@task(
    name="remove",
    help={"username": "The user to remove.", "yes": "Do not ask for confirmation."},
)
def remove_user(c: Context, username: str, yes: bool = False) -> None:
    """Remove a registry user from the local password file."""
    inv = inventory.load()
    check_removal(inv, username)
    confirm_removal(username, yes)
    remove(inv, username)
    Report().changed("local", f"user {username}", "removed")


@task(name="list", default=True)
def list_users(c: Context) -> None:
    """List registry users and their hash scheme."""
    inv = inventory.load()
    htpasswd = load(inv)
    names = sorted(htpasswd.users())
    if not names:
        print(f"no users yet in {password_file(inv)}; add one with 'invoke users.add'")
        return
    for name in names:
        print(f"{name}\t{scheme(htpasswd, name)}")


ns = Collection("users", add, remove_user, list_users)
