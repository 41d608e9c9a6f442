"""A connected host: root commands (with or without sudo), stdin, streams, errors.

Every command is one shell script string whose variable parts went through
``shlex.quote``. Root steps run as ``sudo sh -c <script>`` when the inventory says
``sudo: true``, so a whole step is one SSH command. A root script that reads stdin
(an upload, a secret) runs on a channel of its own, which answers sudo's password
prompt only when it comes.
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from shlex import quote
from typing import BinaryIO

import fabric
import paramiko
from invoke import Context
from invoke.exceptions import AuthFailure

from tasks.errors import RemoteError
from tasks.inventory import Host, Inventory
from tasks.remote.connect import connect, open_connection
from tasks.remote.upload import Upload, archive, upload_script

# A root script on its own channel prints this first, once sudo let it run.
READY = "regkit-root-ready"
# sudo's password prompt (with -S it goes to stderr), answered only when it comes.
PROMPT = "regkit-sudo-password:"


@dataclass
class Target:
    """A connected host: its alias, inventory entry and Connection."""

    alias: str
    spec: Host
    conn: fabric.Connection
    commands: int = 0

    def _as_root(self, script: str) -> str:
        inner = f"sh -c {quote(script)}"
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
            kwargs["out_stream"] = LineStream(stream)
            kwargs["err_stream"] = LineStream(stream)
        try:
            if stdin is not None:
                in_stream = io.StringIO(stdin)
                result = self.conn.run(
                    f"sh -c {quote(script)}", **{**kwargs, "in_stream": in_stream}
                )
            elif root and self.spec.sudo and self._has_sudo_password():
                result = self.conn.sudo(self._as_root(script), **kwargs)
            elif root:
                result = self.conn.run(self._as_root(script), **kwargs)
            else:
                result = self.conn.run(f"sh -c {quote(script)}", **kwargs)
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
        command = f"sh -c {quote(f'echo {READY}; {script}')}"
        if self.spec.sudo and self._has_sudo_password():
            command = f"sudo -k -S -p {quote(PROMPT)} {command}"
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
        with self.writing(script, what) as stream:
            stream.write(data)
        return stream.output

    @contextmanager
    def writing(self, script: str, what: str) -> Iterator[Sink]:
        """Run ``script`` as root and write its stdin as a stream (a tar of a snapshot,
        sent as it is made); when the block ends, the script's output is in
        ``.output``. Raises naming ``what`` if the script fails; an error of the
        caller's own (a local file it reads) passes through as it is."""
        channel, head = self.open_channel(script, what)
        try:
            sink = Sink(ChannelWriter(channel), buffer_size=1 << 20)
            yield sink
            sink.flush()
            with channel_errors():
                channel.shutdown_write()
            sink.output = self._finish(channel, head, what)
        except ChannelLost:
            raise self._stopped(channel, head, what) from None
        finally:
            channel.close()

    @contextmanager
    def reading(self, script: str, what: str, stdin: bytes = b"") -> Iterator[BinaryIO]:
        """Run ``script`` as root and read its output as a byte stream while it runs
        (a tar of the registry's data, with no copy on the host). ``stdin`` goes in
        from a thread meanwhile, so a long input never waits on unread output. Raises
        naming ``what`` if the script fails or the connection drops."""
        channel, head = self.open_channel(script, what)
        feeder = threading.Thread(target=_send_all, args=(channel, stdin), daemon=True)
        feeder.start()
        try:
            yield io.BufferedReader(ChannelReader(channel, head), buffer_size=1 << 20)
            feeder.join()
            self._finish(channel, b"", what)
        except ChannelLost:
            raise self._stopped(channel, b"", what) from None
        finally:
            channel.close()

    def _finish(self, channel: paramiko.Channel, head: bytes, what: str) -> str:
        """The rest of a root script's output once its stdin is closed; raise if it failed."""
        with channel_errors():
            out = (head + channel.makefile("rb").read()).decode(errors="replace")
            err = channel.makefile_stderr("rb").read().decode(errors="replace")
            status = channel.recv_exit_status()
        if status == -1:
            raise self.lost(what)
        self.check_sudo(err)
        if status != 0:
            detail = (err.strip() or out.strip()).splitlines()[-3:]
            raise RemoteError(f"{self.alias}: {what} failed: {' / '.join(detail) or 'no output'}")
        return out

    def _stopped(self, channel: paramiko.Channel, head: bytes, what: str) -> RemoteError:
        """Why a stream broke: the script's own failure if it ended, else a lost connection."""
        if channel.exit_status_ready():
            try:
                self._finish(channel, head, what)
            except RemoteError as exc:
                return exc
            except ChannelLost:
                pass
        return self.lost(what)

    def upload(self, files: Iterable[Upload]) -> None:
        """Place ``files`` as root, each atomically, in one SSH command (see
        :mod:`tasks.remote.upload`)."""
        files = list(files)
        if not files:
            return
        count = f"{len(files)} file{'s' if len(files) != 1 else ''}"
        self.feed(upload_script(files), archive(files), f"uploading {count}")


class ChannelReader(io.RawIOBase):
    """A channel's stdout as a readable raw stream, starting with ``head``."""

    def __init__(self, channel: paramiko.Channel, head: bytes) -> None:
        super().__init__()
        self._channel, self._head = channel, head

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n], self._head = self._head[:n], self._head[n:]
            return n
        with channel_errors():
            data = self._channel.recv(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class ChannelLost(Exception):
    """The SSH channel broke (not an error of a local file)."""


@contextmanager
def channel_errors() -> Iterator[None]:
    """Turn what a broken channel raises into ChannelLost."""
    try:
        yield
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise ChannelLost(str(exc)) from exc


def _send_all(channel: paramiko.Channel, data: bytes) -> None:
    """A script's whole stdin, then its end (the reading side sees any failure)."""
    with suppress(ChannelLost), channel_errors():
        channel.sendall(data)
        channel.shutdown_write()


class Sink(io.BufferedWriter):
    """A root script's stdin; after the ``writing`` block, ``output`` is what it printed."""

    output = ""


class ChannelWriter(io.RawIOBase):
    """A channel's stdin as a writable raw stream."""

    def __init__(self, channel: paramiko.Channel) -> None:
        super().__init__()
        self._channel = channel

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        with channel_errors():
            self._channel.sendall(data)
        return len(data)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class LineStream(io.StringIO):
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
