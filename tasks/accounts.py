"""Who may push, changed live on the registry hosts: ``fab adduser``, ``deluser``, ``users``.

The password file is kept locally (see :mod:`tasks.users`) and pushed to every
registry host where it differs. nginx reads it on every request, so a change
takes effect at once: no rebuild, no restart, no reload, no dropped connection.
"""

from __future__ import annotations

from invoke import Collection, Context

from tasks import inventory, pki, users, wanted
from tasks.cli import task
from tasks.errors import RemoteError
from tasks.inventory import Inventory
from tasks.layout import AUTH_FILE, CA_FILE, NGINX
from tasks.remote import (
    EMIT,
    Target,
    aliases_from,
    each_host,
    files_fact,
    host_lock,
    parse_values,
    q,
    sha256,
)
from tasks.report import Report


def push_password_file(inv: Inventory, t: Target, rep: Report) -> None:
    """Upload the password file where it differs; say which."""
    file = wanted.password_file(inv)
    out = t.check(
        f"{EMIT}\n{files_fact([AUTH_FILE])}\n"
        f"emit nginx \"$(docker inspect --format '{{{{.State.Running}}}}' {NGINX} "
        '2>/dev/null)"',
        "reading the password file",
    ).stdout
    facts = parse_values(out)
    if facts.get("nginx") != "true":
        raise RemoteError(
            f"{t.alias}: the registry's proxy is not running here; run 'fab -H {t.alias} deploy'"
        )
    if facts.get(f"file:{AUTH_FILE}") == file.fact:
        rep.unchanged(t.alias, "password file", "already up to date")
        return
    t.upload([file])
    rep.changed(t.alias, "password file", "uploaded; nginx reads it on the next request")


def curl_config(user: str, password: str) -> str:
    """A curl config line with the credentials (fed on stdin, never on a command line)."""
    escaped = f"{user}:{password}".replace("\\", "\\\\").replace('"', '\\"')
    return f'user = "{escaped}"\n'


def prove_login(inv: Inventory, t: Target, rep: Report, user: str, password: str) -> None:
    """``/v2/`` answers 200 for ``user`` through the public URL, from the host itself."""
    url = f"{inv.registry.url}/v2/"
    script = f"""command -v curl >/dev/null 2>&1 || {{ echo "no curl"; exit 0; }}
cfg=$(cat)
for i in 1 2 3 4 5 6 7 8 9 10; do
  code=$(printf '%s\\n' "$cfg" | curl -s -K - -o /dev/null -w '%{{http_code}}' \\
    --cacert {CA_FILE} {q(url)})
  [ "$code" = 200 ] && {{ echo 200; exit 0; }}
  sleep 1
done
echo "$code"; exit 1"""
    result = t.run(script, root=False, stdin=curl_config(user, password), what="login check")
    code = result.stdout.strip()
    if code == "no curl":
        rep.skipped(t.alias, f"login check for {user}", "no curl on the host")
    elif result.failed:
        raise RemoteError(f"{t.alias}: {url} answered {code} for {user}, not 200")
    else:
        rep.ok(t.alias, f"login check for {user}", f"{url} answers 200")


def prove_gone(t: Target, rep: Report, user: str) -> None:
    """The host's password file no longer has ``user``."""
    count = t.check(
        f"cut -d: -f1 {AUTH_FILE} | grep -cxF -e {q(user)}; true", "checking the password file"
    ).stdout.strip()
    if count != "0":
        raise RemoteError(f"{t.alias}: {user} is still in {AUTH_FILE}")
    rep.ok(t.alias, f"{user} removed", "new logins as this user get 401")


# A host that failed keeps its old password file until a deploy brings it in line.
IN_LINE = "; bring their password files in line with the local one: fab -H <those hosts> deploy"


@task(
    help={
        "username": "Login name (asked when not given).",
        "password-stdin": "Read the password from standard input instead of asking twice.",
    }
)
def adduser(c: Context, username: str = "", password_stdin: bool = False) -> None:
    """Add a registry user, or change a password, live on every registry host."""
    inv = inventory.load()
    aliases = aliases_from(c, inv, "registry", "adduser")
    if not aliases:
        return
    pki.require(inv)
    username = users.ask_username(username, password_stdin)
    password = users.ask_password(inv.users.min_password_length, password_stdin)
    rep = Report()
    outcome = users.set_password(inv, username, password)
    rep.changed("local", f"user {username}", f"{outcome}, bcrypt")

    def work(t: Target) -> None:
        # Locked: a deploy running meanwhile would upload the password file it read before.
        with host_lock(t, "adduser"):
            push_password_file(inv, t, rep)
            prove_login(inv, t, rep, username, password)

    each_host(c, inv, aliases, rep, "adduser", work, hint=IN_LINE)


@task(help={"username": "The user to remove.", "yes": "Do not ask for confirmation."})
def deluser(c: Context, username: str, yes: bool = False) -> None:
    """Remove a registry user, live on every registry host (the last user is kept)."""
    inv = inventory.load()
    aliases = aliases_from(c, inv, "registry", "deluser")
    if not aliases:
        return
    pki.require(inv)
    users.check_username(username)
    users.confirm_removal(username, yes)
    users.remove(inv, username)
    rep = Report()
    rep.changed("local", f"user {username}", "removed")

    def work(t: Target) -> None:
        with host_lock(t, "deluser"):
            push_password_file(inv, t, rep)
            prove_gone(t, rep, username)

    each_host(c, inv, aliases, rep, "deluser", work, hint=IN_LINE)


@task(name="users")
def list_users(c: Context) -> None:
    """List registry users (and hash scheme); flag any host whose password file differs."""
    inv = inventory.load()
    aliases = aliases_from(c, inv, "registry", "users")
    if not aliases:
        return
    htpasswd = users.load(inv)
    for name in sorted(htpasswd.users()):
        print(f"{name}\t{users.scheme(htpasswd, name)}")
    if not htpasswd.users():
        print("no users yet; add one with 'fab adduser'")
        return
    digest = sha256(wanted.password_file(inv).content)
    rep = Report()

    def work(t: Target) -> None:
        have = t.check(
            f"sha256sum < {AUTH_FILE} 2>/dev/null | cut -d' ' -f1", "reading the password file"
        ).stdout.strip()
        if have != digest:
            raise RemoteError(f"{t.alias}: its password file differs from the local one")
        rep.ok(t.alias, "password file", "same as local")

    each_host(c, inv, aliases, rep, "users", work, hint=IN_LINE)


ns = Collection("accounts", adduser, deluser, list_users)
