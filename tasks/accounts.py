"""Who may push, changed live on the registry hosts: ``fab adduser``, ``deluser``, ``users``.

The password file is kept locally (see :mod:`tasks.users`) and pushed to every
registry host where it differs (:mod:`tasks.plans.accounts`). nginx reads it on
every request, so a change takes effect at once: no rebuild, no restart, no
reload, no dropped connection.
"""

from __future__ import annotations

from shlex import quote

from invoke import Collection, Context

from tasks import inventory, pki, scripts, users, wanted
from tasks.cli import task
from tasks.errors import RemoteError
from tasks.inventory import Inventory
from tasks.layout import AUTH_FILE, CA_FILE
from tasks.plans import accounts as planner
from tasks.remote.fanout import each_host, hosts_for
from tasks.remote.lock import host_lock
from tasks.remote.target import Target
from tasks.report import Report


def push_password_file(inv: Inventory, target: Target, report: Report) -> None:
    """Upload the password file where it differs; say which."""
    output = target.check(planner.facts_script(), "reading the password file").stdout
    upload = planner.plan(target.alias, wanted.password_file(inv), planner.parse_facts(output))
    if upload is None:
        report.unchanged(target.alias, "password file", "already up to date")
        return
    target.upload([upload])
    report.changed(target.alias, "password file", "uploaded; nginx reads it on the next request")


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
        report.ok(target.alias, f"login check for {user}", f"{url} answers 200")


def prove_gone(target: Target, report: Report, user: str) -> None:
    """The host's password file no longer has ``user``."""
    count = target.check(
        f"cut -d: -f1 {quote(AUTH_FILE)} | grep -cxF -e {quote(user)}; true",
        "checking the password file",
    ).stdout.strip()
    if count != "0":
        raise RemoteError(f"{target.alias}: {user} is still in {AUTH_FILE}")
    report.ok(target.alias, f"{user} removed", "new logins as this user get 401")


# A host that failed keeps its old password file until a deploy brings it in line.
IN_LINE = "; bring their password files in line with the local one: fab -H <those hosts> deploy"


@task(
    role="registry",
    help={
        "username": "Login name (asked when not given).",
        "password-stdin": "Read the password from standard input instead of asking twice.",
        "force": "Act on -H hosts whose inventory role is not registry.",
    },
)
def adduser(
    c: Context, username: str = "", password_stdin: bool = False, force: bool = False
) -> None:
    """Add a registry user, or change a password, live on every registry host."""
    inv = inventory.load()
    aliases = hosts_for(c, inv, "registry", "adduser", force)
    pki.require(inv)
    username = users.ask_username(username, password_stdin)
    password = users.ask_password(inv.users.min_password_length, password_stdin)
    report = Report()
    outcome = users.set_password(inv, username, password)
    report.changed("local", f"user {username}", f"{outcome}, bcrypt")

    def work(target: Target) -> None:
        # Locked: a deploy running meanwhile would upload the password file it read before.
        with host_lock(target, "adduser"):
            push_password_file(inv, target, report)
            prove_login(inv, target, report, username, password)

    each_host(c, inv, aliases, report, "adduser", work, hint=IN_LINE)


@task(
    role="registry",
    help={
        "username": "The user to remove.",
        "yes": "Do not ask for confirmation.",
        "force": "Act on -H hosts whose inventory role is not registry.",
    },
)
def deluser(c: Context, username: str, yes: bool = False, force: bool = False) -> None:
    """Remove a registry user, live on every registry host (the last user is kept)."""
    inv = inventory.load()
    aliases = hosts_for(c, inv, "registry", "deluser", force)
    pki.require(inv)
    users.check_username(username)
    users.confirm_removal(username, yes)
    users.remove(inv, username)
    report = Report()
    report.changed("local", f"user {username}", "removed")

    def work(target: Target) -> None:
        with host_lock(target, "deluser"):
            push_password_file(inv, target, report)
            prove_gone(target, report, username)

    each_host(c, inv, aliases, report, "deluser", work, hint=IN_LINE)


@task(
    name="users",
    role="registry",
    help={"force": "Act on -H hosts whose inventory role is not registry."},
)
def list_users(c: Context, force: bool = False) -> None:
    """List registry users (and hash scheme); flag any host whose password file differs."""
    inv = inventory.load()
    aliases = hosts_for(c, inv, "registry", "users", force)
    htpasswd = users.load(inv)
    for name in sorted(htpasswd.users()):
        print(f"{name}\t{users.scheme(htpasswd, name)}")
    if not htpasswd.users():
        print("no users yet; add one with 'fab adduser'")
        return
    if not users.has_probe_credential(inv):
        print(f"not deployed from {inv.state_path} yet: 'fab deploy' puts the users on the hosts")
        return
    file = wanted.password_file(inv)
    report = Report()

    def work(target: Target) -> None:
        output = target.check(planner.facts_script(), "reading the password file").stdout
        if planner.parse_facts(output).file.split(" ")[0] != file.digest:
            raise RemoteError(f"{target.alias}: its password file differs from the local one")
        report.ok(target.alias, "password file", "same as local")

    each_host(c, inv, aliases, report, "users", work, hint=IN_LINE)


ns = Collection("accounts", adduser, deluser, list_users)
