"""Who may do what, changed live on the registry hosts: ``fab adduser``, ``deluser``,
``setrole``, ``users``.

The password file and the rights are kept locally (:mod:`tasks.users`,
:mod:`tasks.rights`) and pushed to every registry host where they differ
(:mod:`tasks.plans.accounts`). nginx reads the password file on every request and
the token service reads the rights whenever they change, so a change takes effect
with the next token: no rebuild, no restart, no reload, no dropped connection.
"""

from __future__ import annotations

import sys
from pathlib import Path
from shlex import quote

from invoke import Collection, Context

from tasks import inventory, pki, rights, scripts, users, wanted
from tasks.cli import task
from tasks.errors import RemoteError, UsersError
from tasks.inventory import Inventory
from tasks.layout import AUTH_FILE, CA_FILE
from tasks.plans import accounts as planner
from tasks.remote.fanout import each_host, hosts_for
from tasks.remote.lock import host_lock
from tasks.remote.target import Target
from tasks.remote.upload import Upload
from tasks.report import Report, aligned, printable
from tasks.rights import Access
from tasks.state import atomic_write


def account_files(inv: Inventory) -> list[Upload]:
    return [wanted.password_file(inv), wanted.rights_file(inv)]


def push_account_files(inv: Inventory, target: Target, report: Report) -> bool:
    """Upload the password and rights files where they differ; say which. False when
    the host was never deployed (nothing to change there yet)."""
    output = target.check(planner.facts_script(), "reading the password and rights files")
    plan = planner.plan(target.alias, account_files(inv), planner.parse_facts(output.stdout))
    if plan.skip:
        report.skipped(target.alias, "password and rights files", plan.skip)
        return False
    if not plan.uploads:
        report.unchanged(target.alias, "password and rights files", "already up to date")
        return True
    target.upload(list(plan.uploads))
    names = " and ".join("password file" if f.path == AUTH_FILE else "rights" for f in plan.uploads)
    report.changed(target.alias, names, "uploaded; the next login and the next token use them")
    return True


def curl_config(user: str, password: str) -> str:
    """A curl config line with the credentials (fed on stdin, never on a command line)."""
    escaped = f"{user}:{password}".replace("\\", "\\\\").replace('"', '\\"')
    return f'user = "{escaped}"\n'


def login_check_script(inv: Inventory) -> str:
    reg = inv.registry
    return scripts.script("login-check", ca=CA_FILE, url=reg.url, service=reg.domain)


def prove_login(inv: Inventory, target: Target, report: Report, user: str, password: str) -> None:
    """``user`` gets a token, and ``/v2/`` answers 200 with it, through the public URL,
    from the host itself."""
    url = f"{inv.registry.url}/auth/token"
    result = target.run(
        login_check_script(inv),
        root=False,
        stdin=curl_config(user, password),
        what="login check",
    )
    code = result.stdout.strip()
    if code == "no curl":
        report.skipped(target.alias, f"login check for {user}", "no curl on the host")
    elif result.failed:
        raise RemoteError(f"{target.alias}: {url} answered {code} for {user}, not 200")
    else:
        report.ok(target.alias, f"login check for {user}", "a token, and /v2/ answers 200 with it")


def prove_gone(target: Target, report: Report, user: str) -> None:
    """The host's password file no longer has ``user``."""
    count = target.check(
        f"cut -d: -f1 {quote(AUTH_FILE)} | grep -cxF -e {quote(user)}; true",
        "checking the password file",
    ).stdout.strip()
    if count != "0":
        raise RemoteError(f"{target.alias}: {user} is still in {AUTH_FILE}")
    report.ok(target.alias, f"{user} removed", "new logins as this user get 401")


# A host that failed keeps its old files until a deploy brings them in line.
IN_LINE = "; bring their password and rights files in line: fab -H <those hosts> deploy"


def wanted_access(inv: Inventory, name: str, role: str, repos: str, robot: bool) -> Access:
    """The rights ``adduser`` gives: as asked; else the user's own (a password change
    keeps them); else push on everything."""
    current = rights.load_local(inv).get(name)
    if not role and not repos and current is not None:
        return Access(current.role, current.repos, robot or current.robot)
    base = current or Access()
    return Access(
        rights.check_role(role) if role else base.role,
        rights.parse_patterns(repos) if repos else base.repos,
        robot,
    )


def hand_out_token(name: str, token: str, token_file: str, report: Report) -> None:
    """Show a robot's new token once, or write it to ``token_file`` (0600)."""
    if token_file:
        path = Path(token_file)
        atomic_write(path, token + "\n", mode=0o600)
        report.changed("local", f"robot {name}", f"token written to {path} (0600)")
    else:
        print(f"robot {name} token (shown once, keep it now): {token}", file=sys.stdout)


@task(
    role="registry",
    help={
        "username": "Login name (asked when not given).",
        "password-stdin": "Read the password from standard input instead of asking twice.",
        "role": "pull, push or admin (new users: push; existing users keep theirs).",
        "repos": "Repository patterns, comma-separated: 'team-a/*,shared/base' ('*': all).",
        "robot": "Make (or renew) a robot account of this name with a random token.",
        "token-file": "With --robot: write the token to this file (0600) instead of showing it.",
        "force": "Act on -H hosts whose inventory role is not registry.",
    },
)
def adduser(
    c: Context,
    username: str = "",
    password_stdin: bool = False,
    role: str = "",
    repos: str = "",
    robot: str = "",
    token_file: str = "",
    force: bool = False,
) -> None:
    """Add a registry user or robot, or change a password, live on every registry host."""
    inv = inventory.load()
    aliases = hosts_for(c, inv, "registry", "adduser", force)
    pki.require(inv)
    if robot and (username or password_stdin):
        raise UsersError("a robot gets a random token: give --robot NAME without a password")
    if token_file and not robot:
        raise UsersError("--token-file goes with --robot")
    name = users.check_username(robot) if robot else users.ask_username(username, password_stdin)
    access = wanted_access(inv, name, role, repos, bool(robot))
    if robot:
        secret = users.new_robot_token()
        outcome = users.set_password(inv, name, secret, rounds=users.PROBE_ROUNDS)
    else:
        secret = users.ask_password(inv.users.min_password_length, password_stdin)
        outcome = users.set_password(inv, name, secret)
    rights.set_access(inv, name, access)
    report = Report()
    kind = "robot" if robot else "user"
    report.changed("local", f"{kind} {name}", f"{outcome}, bcrypt, {access.describe()}")
    if robot:
        hand_out_token(name, secret, token_file, report)

    def work(target: Target) -> None:
        # Locked: a deploy running meanwhile would upload the files it read before.
        with host_lock(target, "adduser"):
            if push_account_files(inv, target, report):
                prove_login(inv, target, report, name, secret)

    each_host(c, inv, aliases, report, "adduser", work, hint=IN_LINE)


@task(
    role="registry",
    help={
        "username": "The user whose rights change.",
        "role": "pull, push or admin.",
        "repos": "Repository patterns, comma-separated: 'team-a/*,shared/base' (default '*').",
        "force": "Act on -H hosts whose inventory role is not registry.",
    },
)
def setrole(c: Context, username: str, role: str, repos: str = "", force: bool = False) -> None:
    """Change a user's role and repositories, live (the password stays as it is)."""
    inv = inventory.load()
    aliases = hosts_for(c, inv, "registry", "setrole", force)
    pki.require(inv)
    if username not in users.names(inv):
        known = ", ".join(users.names(inv)) or "none"
        raise UsersError(f"no user {username!r} in {users.password_file(inv)} (users: {known})")
    current = rights.effective(inv, [username])[username]
    access = Access(rights.check_role(role), rights.parse_patterns(repos), current.robot)
    report = Report()
    if rights.set_access(inv, username, access):
        report.changed("local", f"rights of {username}", access.describe())
    else:
        report.unchanged("local", f"rights of {username}", access.describe())

    def work(target: Target) -> None:
        with host_lock(target, "setrole"):
            push_account_files(inv, target, report)

    each_host(c, inv, aliases, report, "setrole", work, hint=IN_LINE)


@task(
    role="registry",
    help={
        "username": "The user to remove.",
        "yes": "Do not ask for confirmation.",
        "force": "Act on -H hosts whose inventory role is not registry.",
    },
)
def deluser(c: Context, username: str, yes: bool = False, force: bool = False) -> None:
    """Remove a registry user or robot, live on every registry host (the last is kept)."""
    inv = inventory.load()
    aliases = hosts_for(c, inv, "registry", "deluser", force)
    pki.require(inv)
    users.check_removal(inv, username)
    users.confirm_removal(username, yes)
    users.remove(inv, username)
    rights.forget(inv, username)
    report = Report()
    report.changed("local", f"user {username}", "removed")

    def work(target: Target) -> None:
        with host_lock(target, "deluser"):
            if push_account_files(inv, target, report):
                prove_gone(target, report, username)

    each_host(c, inv, aliases, report, "deluser", work, hint=IN_LINE)


def user_table(inv: Inventory) -> str:
    """Every user and robot: role, repositories, hash scheme, and where the rights come
    from (``inventory`` when ``users.access`` declares them); "" when there are none."""
    htpasswd = users.load(inv)
    names = sorted(htpasswd.users())
    if not names:
        return ""
    access = rights.effective(inv, names)
    rows = [("USER", "KIND", "ROLE", "REPOSITORIES", "HASH", "RIGHTS FROM")]
    for name in names:
        a = access[name]
        rows.append(
            (
                printable(name),  # the local file may have been edited by hand
                "robot" if a.robot else "user",
                a.role,
                printable(",".join(a.repos)),
                users.scheme(htpasswd, name),
                "inventory" if name in inv.users.access else "local",
            )
        )
    return aligned(rows)


@task(
    name="users",
    role="registry",
    help={"force": "Act on -H hosts whose inventory role is not registry."},
)
def list_users(c: Context, force: bool = False) -> None:
    """List users and robots with their role and repositories; flag hosts that differ."""
    inv = inventory.load()
    aliases = hosts_for(c, inv, "registry", "users", force)
    table = user_table(inv)
    if not table:
        print("no users yet; add one with 'fab adduser'")
        return
    print(table)
    if not users.has_probe_credential(inv):
        print(f"not deployed from {inv.state_path} yet: 'fab deploy' puts the users on the hosts")
        return
    files = account_files(inv)
    report = Report()

    def work(target: Target) -> None:
        output = target.check(planner.facts_script(), "reading the password and rights files")
        facts = planner.parse_facts(output.stdout)
        differ = [f.path for f in files if facts.files.get(f.path, "").split(" ")[0] != f.digest]
        if differ:
            verb = "differs" if len(differ) == 1 else "differ"
            raise RemoteError(f"{target.alias}: {' and '.join(differ)} {verb} from local state")
        report.ok(target.alias, "password and rights files", "same as local")

    each_host(c, inv, aliases, report, "users", work, hint=IN_LINE)


ns = Collection("accounts", adduser, deluser, setrole, list_users)
