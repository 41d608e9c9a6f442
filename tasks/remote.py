"""Running things on a host: root commands (with or without sudo), uploads, counting.

Every command is one shell script string whose variable parts went through
``shlex.quote``. Root steps run as ``sudo sh -c <script>`` when the inventory
says ``sudo: true``, so a whole step is one SSH command. Files reach root-owned
places by upload to a private temp folder, then ``install`` into place, so a
half-written file never stands where a service reads it.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import io
import re
import shlex
import socket
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import fabric
from invoke import Context
from invoke.exceptions import AuthFailure

from tasks.connect import connect, open_connection
from tasks.errors import RegkitError, RemoteError
from tasks.inventory import Host, Inventory
from tasks.report import Report

q = shlex.quote
# How many hosts a parallel task talks to at once.
MAX_PARALLEL = 32


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Upload:
    """One file to place on the host: content, mode, owner and group (numeric)."""

    path: str
    content: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0

    @property
    def digest(self) -> str:
        return sha256(self.content)

    @property
    def stat(self) -> str:
        """What ``stat -c '%a %u %g'`` prints when the file is as wanted."""
        return f"{self.mode:o} {self.uid} {self.gid}"

    @property
    def fact(self) -> str:
        """What :func:`file_fact` reports when the file on the host is as wanted."""
        return f"{self.digest} {self.stat}"


# Facts scripts print one ``key<TAB>value`` line per fact with this function.
EMIT = 'emit() { printf \'%s\\t%s\\n\' "$1" "$2"; }'


def file_fact(path: str) -> str:
    """A facts-script line: ``file:<path>  <sha256> <mode> <uid> <gid>`` if the file exists."""
    p = q(path)
    return (
        f"[ -f {p} ] && emit file:{p} "
        f"\"$(sha256sum < {p} | cut -d' ' -f1) $(stat -c '%a %u %g' {p})\""
    )


@dataclass
class Target:
    """A connected host: its alias, inventory entry and Connection."""

    alias: str
    spec: Host
    conn: fabric.Connection
    commands: int = 0
    log: list[str] = field(default_factory=list)

    def _as_root(self, script: str) -> str:
        inner = f"sh -c {q(script)}"
        if not self.spec.sudo:
            return inner
        return inner if self._has_sudo_password() else f"sudo -n {inner}"

    def _sudo_with_stdin(
        self, script: str, stdin: str, kwargs: dict[str, object]
    ) -> fabric.runners.Result:
        """sudo reads its password from stdin, so the secret goes through a private file.

        The file sits in a 0700 folder of the login user, is read by the root shell
        (never on a command line) and is removed right after.
        """
        folder = self._private_folder()
        try:
            self.conn.sftp().putfo(io.BytesIO(stdin.encode()), f"{folder}/stdin")
            wrapped = f"( {script}\n) < {q(folder + '/stdin')}"
            return self.conn.sudo(f"sh -c {q(wrapped)}", **kwargs)
        finally:
            self._remove(folder)

    def _remove(self, folder: str) -> None:
        self.commands += 1
        self.conn.run(f"rm -rf {q(folder)}", hide=True, warn=True, in_stream=False)

    def _private_folder(self) -> str:
        """A fresh 0700 temp folder of the login user, for files on their way to root."""
        self.commands += 1
        tmp = self.conn.run("umask 077 && mktemp -d", hide=True, warn=True, in_stream=False)
        if tmp.failed:
            raise RemoteError(f"{self.alias}: cannot make a temp folder: {tmp.stderr.strip()}")
        return tmp.stdout.strip()

    def _has_sudo_password(self) -> bool:
        return self.conn.config.sudo.password is not None

    def run(
        self,
        script: str,
        *,
        root: bool = True,
        warn: bool = True,
        stream: Callable[[str], None] | None = None,
        what: str = "",
        stdin: str | None = None,
    ) -> fabric.runners.Result:
        """Run ``script`` (as root unless ``root=False``); one SSH command.

        ``stream`` receives output lines as they come (for long steps). ``what``
        names the step in error messages. ``stdin`` is fed to the script (for
        secrets: never on a command line); with a sudo password, sudo reads its
        password first from the same stream, and ``-k`` makes it always ask.
        """
        self.commands += 1
        self.log.append(what or script.split("\n", 1)[0][:60])
        kwargs: dict[str, object] = {"hide": True, "warn": warn, "in_stream": False}
        if stream is not None:
            kwargs["out_stream"] = _LineStream(stream)
            kwargs["err_stream"] = _LineStream(stream)
        try:
            if stdin is not None and root and self.spec.sudo and self._has_sudo_password():
                result = self._sudo_with_stdin(script, stdin, kwargs)
            elif stdin is not None:
                command = f"sudo -n sh -c {q(script)}" if root and self.spec.sudo else None
                command = command or f"sh -c {q(script)}"
                result = self.conn.run(command, **{**kwargs, "in_stream": io.StringIO(stdin)})
            elif root and self.spec.sudo and self._has_sudo_password():
                result = self.conn.sudo(self._as_root(script), **kwargs)
            elif root:
                result = self.conn.run(self._as_root(script), **kwargs)
            else:
                result = self.conn.run(f"sh -c {q(script)}", **kwargs)
        except AuthFailure:
            raise RemoteError(
                f"{self.alias}: sudo refused the password; check it, or the user's sudo rights"
            ) from None
        err = result.stderr or ""
        if root and self.spec.sudo and "sudo: a password is required" in err:
            raise RemoteError(
                f"{self.alias}: sudo needs a password for {self.conn.user}; run fab with "
                "--prompt-for-sudo-password, or allow passwordless sudo for this user"
            )
        if root and self.spec.sudo and "is not in the sudoers file" in err:
            raise RemoteError(f"{self.alias}: {self.conn.user} may not use sudo on this host")
        return result

    def check(self, script: str, what: str, **kwargs: object) -> fabric.runners.Result:
        """Run and raise RemoteError naming ``what`` when the script fails."""
        result = self.run(script, what=what, **kwargs)  # type: ignore[arg-type]
        if result.failed:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
            raise RemoteError(f"{self.alias}: {what} failed: {' / '.join(detail) or 'no output'}")
        return result

    def upload(self, files: Iterable[Upload]) -> None:
        """Place ``files`` atomically as root: private temp folder, then install + mv."""
        files = list(files)
        if not files:
            return
        folder = self._private_folder()
        lines = ["set -e"]
        try:
            sftp = self.conn.sftp()
            for i, f in enumerate(files):
                staged = f"{folder}/{i}"
                sftp.putfo(io.BytesIO(f.content), staged)
                dest = PurePosixPath(f.path)
                part = f"{dest.parent}/.{dest.name}.regkit-new"
                lines += [
                    f"mkdir -p {q(str(dest.parent))}",
                    f"install -o {f.uid} -g {f.gid} -m {f.mode:o} {q(staged)} {q(part)}",
                    f"mv -f {q(part)} {q(str(dest))}",
                ]
            result = self.run("\n".join(lines), what="install uploaded files")
        except OSError as exc:
            raise RemoteError(f"{self.alias}: uploading files failed: {exc}") from None
        finally:
            self._remove(folder)
        if result.failed:
            raise RemoteError(f"{self.alias}: installing files failed: {result.stderr.strip()}")


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _LineStream(io.StringIO):
    """A write-only stream that hands complete lines, without colour codes, to a callback."""

    def __init__(self, callback: Callable[[str], None]) -> None:
        super().__init__()
        self._callback = callback
        self._buffer = ""

    def write(self, s: str) -> int:
        self._buffer += s
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            line = _ANSI.sub("", line).rstrip()
            if line.strip():
                self._callback(line)
        return len(s)


def open_target(inv: Inventory, alias: str, ctx: Context | None = None) -> Target:
    """Connect to ``alias`` (pinned host key) and return a Target."""
    conn = open_connection(connect(inv, alias, ctx))
    return Target(alias, inv.host(alias), conn)


# One task at a time changes a host: deploy, gc, rollback and undeploy take this lock.
# It lives under /run, so a reboot clears a lock left by a killed task.
LOCK = "/run/lock/regkit"


@contextmanager
def host_lock(t: Target, task: str) -> Iterator[None]:
    """Hold the host's lock for ``task``; refuse, naming the holder, if it is taken."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    owner = f"{task} from {getpass.getuser()}@{socket.gethostname()} since {stamp}"
    out = t.check(
        f"mkdir -p /run/lock\nif mkdir {LOCK} 2>/dev/null; then "
        f"printf '%s\\n' {q(owner)} > {LOCK}/owner; echo acquired; "
        f"else cat {LOCK}/owner 2>/dev/null || echo 'an unknown task'; fi",
        "taking the host lock",
    ).stdout.strip()
    if out != "acquired":
        raise RemoteError(
            f"{t.alias}: busy: {out} holds the lock; wait for it to finish, or if no task "
            f"is running there, remove {LOCK} on the host"
        )
    try:
        yield
    finally:
        t.run(f"rm -rf {LOCK}", what="releasing the host lock")


def each_host(
    c: Context,
    inv: Inventory,
    aliases: list[str],
    rep: Report,
    task: str,
    work: Callable[[Target], None],
    *,
    step: str = "",
    parallel: bool = False,
    hint: str = "",
) -> None:
    """Run ``work`` on each host (at once when ``parallel``); one host's failure never
    stops the others. Each failure is a ``failed`` line; at the end the summary, then
    one error naming the hosts that failed (with ``hint``, what to do about it).
    """

    def one(alias: str) -> str | None:
        try:
            work(open_target(inv, alias, c))
        except RegkitError as exc:
            rep.failed(alias, step or task, str(exc).removeprefix(f"{alias}: "))
            return alias
        except Exception as exc:  # one host's surprise must not hide the others
            rep.failed(alias, step or task, f"unexpected {type(exc).__name__}: {exc}")
            return alias
        return None

    if parallel:
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(aliases))) as pool:
            failed = [alias for alias in pool.map(one, aliases) if alias]
    else:
        failed = [alias for alias in aliases if one(alias)]
    rep.summary()
    if failed:
        raise RemoteError(f"{task} failed on {', '.join(failed)}{hint}")


_handled: set[tuple[str, str]] = set()


def _fab_hosts() -> list[str]:
    """The aliases given to ``fab -H a,b``, as Fabric parsed them (empty outside fab)."""
    from fabric.main import program

    try:
        value = program.args.hosts.value
    except (AttributeError, IndexError, TypeError):
        return []
    return [h.strip() for h in (value or "").split(",") if h.strip()]


def aliases_from(c: Context, inv: Inventory, role: str, task: str) -> list[str]:
    """The hosts a task acts on: every ``-H`` alias, or every host with ``role``.

    Fabric calls a task once per ``-H`` host; the first call takes them all (so
    they can run in parallel, with one summary) and later calls get nothing.
    """
    if isinstance(c, fabric.Connection):
        wanted = _fab_hosts() or [c.original_host]
        todo = [alias for alias in wanted if (task, alias) not in _handled]
        for alias in todo:
            inv.host(alias)
        _handled.update((task, alias) for alias in todo)
        return todo
    aliases = inv.with_role(role)  # type: ignore[arg-type]
    if not aliases:
        raise RemoteError(f"{inv.source}: no host has role {role!r}; name one with -H")
    return aliases
