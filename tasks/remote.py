"""Running things on a host: root commands (with or without sudo), uploads, counting.

Every command is one shell script string whose variable parts went through
``shlex.quote``. Root steps run as ``sudo sh -c <script>`` when the inventory
says ``sudo: true``, so a whole step is one SSH command. Files reach root-owned
places as one tar stream on a root command's stdin: unpacked into a private
folder under /run, then ``install``-ed and moved into place, so a half-written
file never stands where a service reads it, and a connection lost halfway
leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import io
import re
import shlex
import socket
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import PurePosixPath

import fabric
import paramiko
from invoke import Context
from invoke.exceptions import AuthFailure

from tasks.connect import connect, open_connection
from tasks.errors import RegkitError, RemoteError
from tasks.inventory import Host, Inventory
from tasks.report import Report

q = shlex.quote
# A root script on its own channel prints this first, once sudo let it run.
READY = "regkit-root-ready"
# sudo's password prompt (with -S it goes to stderr), answered only when it comes.
PROMPT = "regkit-sudo-password:"
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
        """What :func:`files_fact` reports when the file on the host is as wanted."""
        return f"{self.digest} {self.stat}"


# Facts scripts print one ``key<TAB>value`` line per fact with this function.
EMIT = 'emit() { printf \'%s\\t%s\\n\' "$1" "$2"; }'


def parse_values(output: str) -> dict[str, str]:
    """The ``key<TAB>value`` lines a facts script printed, as a dict."""
    return dict(line.split("\t", 1) for line in output.splitlines() if "\t" in line)


def files_fact(paths: Iterable[str]) -> str:
    """Facts-script lines: ``file:<path>  <sha256> <mode> <uid> <gid>`` for each of
    ``paths`` that exists, from one ``sha256sum`` and one ``stat`` for them all."""
    ps = " ".join(q(p) for p in paths)
    if not ps:
        return ""
    return (
        f"{{ sha256sum {ps} 2>/dev/null | sed 's/^/S /'; "
        f"stat -c 'T %n %a %u %g' {ps} 2>/dev/null; }} | awk "
        """'$1 == "S" { sum[$3] = $2 } $1 == "T" { st[$2] = $3 " " $4 " " $5 } """
        """END { for (p in st) if (p in sum) printf "file:%s\\t%s %s\\n", p, sum[p], st[p] }'"""
    )


@dataclass
class Target:
    """A connected host: its alias, inventory entry and Connection."""

    alias: str
    spec: Host
    conn: fabric.Connection
    commands: int = 0

    def _as_root(self, script: str) -> str:
        inner = f"sh -c {q(script)}"
        if not self.spec.sudo:
            return inner
        return inner if self._has_sudo_password() else f"sudo -n {inner}"

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
        names the step in error messages. ``stdin`` is fed to a script that runs
        as the login user (for secrets: never on a command line); root scripts
        read stdin through :meth:`feed`.
        """
        if stdin is not None and root:
            raise ValueError("a root script reads its stdin through Target.feed")
        self.commands += 1
        kwargs: dict[str, object] = {"hide": True, "warn": warn, "in_stream": False}
        if stream is not None:
            kwargs["out_stream"] = _LineStream(stream)
            kwargs["err_stream"] = _LineStream(stream)
        try:
            if stdin is not None:
                in_stream = io.StringIO(stdin)
                result = self.conn.run(f"sh -c {q(script)}", **{**kwargs, "in_stream": in_stream})
            elif root and self.spec.sudo and self._has_sudo_password():
                result = self.conn.sudo(self._as_root(script), **kwargs)
            elif root:
                result = self.conn.run(self._as_root(script), **kwargs)
            else:
                result = self.conn.run(f"sh -c {q(script)}", **kwargs)
        except AuthFailure:
            raise self.sudo_refused() from None
        if result.exited == -1:
            raise self.lost(what or "a command")
        if root:
            self.check_sudo(result.stderr or "")
        return result

    def sudo_refused(self) -> RemoteError:
        return RemoteError(
            f"{self.alias}: sudo refused the password; check it, or the user's sudo rights"
        )

    def check_sudo(self, err: str) -> None:
        """Raise a clear error when ``err`` shows sudo refused to run the script."""
        if not self.spec.sudo:
            return
        if "sudo: a password is required" in err:
            raise RemoteError(
                f"{self.alias}: sudo needs a password for {self.conn.user}; run fab with "
                "--prompt-for-sudo-password, or allow passwordless sudo for this user"
            )
        if "incorrect password attempt" in err:
            raise self.sudo_refused()
        if "is not in the sudoers file" in err:
            raise RemoteError(f"{self.alias}: {self.conn.user} may not use sudo on this host")

    def check(self, script: str, what: str, **kwargs: object) -> fabric.runners.Result:
        """Run and raise RemoteError naming ``what`` when the script fails."""
        result = self.run(script, what=what, **kwargs)  # type: ignore[arg-type]
        if result.failed:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
            raise RemoteError(f"{self.alias}: {what} failed: {' / '.join(detail) or 'no output'}")
        return result

    def lost(self, what: str) -> RemoteError:
        """The error for a connection that dropped while ``what`` ran."""
        return RemoteError(
            f"{self.alias}: the SSH connection was lost during {what}; run the task again: "
            "it reads what is on the host and finishes the job"
        )

    def open_channel(self, script: str, what: str) -> tuple[paramiko.Channel, bytes]:
        """Start ``script`` as root on its own channel, ready to read its stdin.

        For streams that Fabric's runner would copy a byte at a time. With a sudo
        password, sudo's prompt is answered when it asks (``-k``: it asks unless the
        user needs none). Returns the channel and the script's first output.
        """
        self.commands += 1
        command = f"sh -c {q(f'echo {READY}; {script}')}"
        if self.spec.sudo and self._has_sudo_password():
            command = f"sudo -k -S -p {q(PROMPT)} {command}"
        elif self.spec.sudo:
            command = f"sudo -n {command}"
        transport = self.conn.client.get_transport()
        if transport is None:
            raise self.lost(what)
        try:
            channel = transport.open_session()
            channel.exec_command(command)
            return channel, self._await_ready(channel, what)
        except (paramiko.SSHException, EOFError, OSError):
            raise self.lost(what) from None

    def _await_ready(self, channel: paramiko.Channel, what: str) -> bytes:
        """Answer sudo's prompt if it comes, until the script says it runs; return what
        it printed after that."""
        out, err, answered = b"", b"", False
        marker = f"{READY}\n".encode()
        while marker not in out:
            if channel.recv_ready():
                out += channel.recv(65536)
            elif channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
                if err.count(PROMPT.encode()) > 1:
                    channel.close()
                    raise self.sudo_refused()
                if PROMPT.encode() in err and not answered:
                    channel.sendall(f"{self.conn.config.sudo.password}\n".encode())
                    answered = True
            elif channel.exit_status_ready():
                status = channel.recv_exit_status()
                channel.close()
                if status == -1:
                    raise self.lost(what)
                text = err.decode(errors="replace")
                self.check_sudo(text)
                raise RemoteError(f"{self.alias}: {what} failed: {text.strip() or 'no output'}")
            else:
                time.sleep(0.002)
        return out.split(marker, 1)[1]

    def feed(self, script: str, data: bytes, what: str) -> str:
        """Run ``script`` as root with ``data`` on its stdin and return its output;
        raise naming ``what`` on failure."""
        channel, head = self.open_channel(script, what)
        try:
            channel.sendall(data)
            channel.shutdown_write()
            out = (head + channel.makefile("rb").read()).decode(errors="replace")
            err = channel.makefile_stderr("rb").read().decode(errors="replace")
            status = channel.recv_exit_status()
        except (paramiko.SSHException, EOFError, OSError):
            raise self.lost(what) from None
        finally:
            channel.close()
        if status == -1:
            raise self.lost(what)
        self.check_sudo(err)
        if status != 0:
            detail = (err.strip() or out.strip()).splitlines()[-3:]
            raise RemoteError(f"{self.alias}: {what} failed: {' / '.join(detail) or 'no output'}")
        return out

    def upload(self, files: Iterable[Upload]) -> None:
        """Place ``files`` as root, each atomically, in one SSH command.

        One tar stream on stdin is unpacked into a private folder under /run (root's,
        in memory, gone at reboot), then each file is ``install``-ed beside its place
        and moved over it. If the stream breaks, tar fails, the folder is removed and
        nothing was placed.
        """
        files = list(files)
        if not files:
            return
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for i, f in enumerate(files):
                info = tarfile.TarInfo(str(i))
                info.size, info.mode = len(f.content), 0o600
                tar.addfile(info, io.BytesIO(f.content))
        lines = [
            "set -e",
            "d=$(mktemp -d /run/regkit-upload.XXXXXX)",
            "trap 'rm -rf \"$d\"' EXIT",
            'tar -x -f - -C "$d"',
        ]
        for i, f in enumerate(files):
            dest = PurePosixPath(f.path)
            part = f"{dest.parent}/.{dest.name}.regkit-new"
            lines += [
                f"mkdir -p {q(str(dest.parent))}",
                f'install -o {f.uid} -g {f.gid} -m {f.mode:o} "$d/{i}" {q(part)}',
                f"mv -f {q(part)} {q(str(dest))}",
            ]
        count = f"{len(files)} file{'s' if len(files) != 1 else ''}"
        self.feed("\n".join(lines), archive.getvalue(), f"uploading {count}")


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


# One task at a time changes a host: deploy, gc, rollback, undeploy, adduser and
# deluser take this lock.
# It is an flock held by a remote process that lives as long as the task's SSH
# connection: a task that ends, fails, is killed or loses its connection frees it.
LOCK = "/run/lock/regkit.lock"
LOCK_OWNER = "/run/lock/regkit.owner"
LOCKED_END = "regkit-locked-facts-end"


def _lines(head: bytes, channel: paramiko.Channel) -> Iterator[str]:
    """The lines a channel prints, starting with what was already read (``head``)."""
    buffer, stream = head, channel.makefile("rb")
    while True:
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode(errors="replace")
        more = stream.readline()
        if not more:
            if buffer:
                yield buffer.decode(errors="replace")
            return
        buffer += more


@contextmanager
def host_lock(t: Target, task: str, then: str = "") -> Iterator[str]:
    """Hold the host's lock for ``task``; refuse, naming the holder, if it is taken.

    ``then`` (a facts script) runs as soon as the lock is held, in the same SSH
    command; the block receives its output.
    """
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    owner = f"{task} from {getpass.getuser()}@{socket.gethostname()} since {stamp}"
    held = (
        f"printf '%s\\n' {q(owner)} > {LOCK_OWNER}; echo acquired\n"
        f"( {then or 'true'}\n) </dev/null\necho {LOCKED_END}\n"
        f"cat >/dev/null; rm -f {LOCK_OWNER}"
    )
    channel, head = t.open_channel(
        "command -v flock >/dev/null || "
        "{ echo 'flock is not installed (util-linux)' >&2; exit 1; }\n"
        f"mkdir -p /run/lock\nflock -n {LOCK} sh -c {q(held)} && exit\n"
        # The holder writes its name right after it locks: give it a moment.
        f"for i in 1 2 3 4 5 6 7 8 9 10; do [ -s {LOCK_OWNER} ] && break; sleep 0.1; done\n"
        f"cat {LOCK_OWNER} 2>/dev/null || echo 'an unknown task'",
        "taking the host lock",
    )
    lines = _lines(head, channel)
    facts: list[str] = []
    try:
        answer = next(lines, "").strip()
        if answer == "acquired":
            for line in lines:
                if line == LOCKED_END:
                    break
                facts.append(line)
            else:
                raise EOFError
    except (paramiko.SSHException, EOFError, OSError):
        channel.close()
        raise t.lost("taking the host lock") from None
    if answer != "acquired":
        if not answer:
            err = channel.makefile_stderr("rb").read().decode(errors="replace")
            channel.close()
            t.check_sudo(err)
            raise RemoteError(f"{t.alias}: taking the host lock failed: {err.strip()}")
        channel.close()
        raise RemoteError(f"{t.alias}: busy: {answer} holds the lock; wait for it to finish")
    try:
        yield "\n".join(facts)
    finally:
        # End of input lets the holder go: it removes the owner file and flock
        # exits, a few ms later on the host; nothing here needs to wait for that.
        # If the connection is gone, so is the lock.
        with suppress(paramiko.SSHException, EOFError, OSError):
            channel.shutdown_write()
        channel.close()


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
