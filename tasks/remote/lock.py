"""One task at a time changes a host: the host lock.

deploy, gc, prune, migrate-storage, rollback, undeploy, adduser and deluser take
it. It is an flock held by a process on the host that lives as long as the task's
SSH channel: a task that ends, fails, is killed or loses its connection frees it
(no stale lock to remove by hand). A facts script can run in the same SSH command as soon as the
lock is held.
"""

from __future__ import annotations

import datetime as dt
import getpass
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import paramiko

from tasks import scripts
from tasks.errors import RemoteError
from tasks.layout import LOCK, LOCK_OWNER
from tasks.remote.target import Target

LOCKED_END = "regkit-locked-facts-end"


def lock_script(owner: str, then: str = "") -> str:
    """Take the lock (printing "acquired", then ``then``'s output, then LOCKED_END) or
    print who holds it."""
    held = scripts.script(
        "lock-held", owner=owner, owner_file=LOCK_OWNER, then=then, end_marker=LOCKED_END
    )
    return scripts.script("lock", lock=LOCK, owner_file=LOCK_OWNER, held=held)


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
def host_lock(target: Target, task: str, then: str = "") -> Iterator[str]:
    """Hold the host's lock for ``task``; refuse, naming the holder, if it is taken.

    ``then`` (a facts script) runs as soon as the lock is held, in the same SSH
    command; the block receives its output.
    """
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    owner = f"{task} from {getpass.getuser()}@{socket.gethostname()} since {stamp}"
    channel, head = target.open_channel(lock_script(owner, then), "taking the host lock")
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
        raise target.lost("taking the host lock") from None
    if answer != "acquired":
        if not answer:
            err = channel.makefile_stderr("rb").read().decode(errors="replace")
            channel.close()
            target.check_sudo(err)
            raise RemoteError(f"{target.alias}: taking the host lock failed: {err.strip()}")
        channel.close()
        raise RemoteError(f"{target.alias}: busy: {answer} holds the lock; wait for it to finish")
    try:
        yield "\n".join(facts)
    finally:
        # End of input lets the holder go: it removes the owner file and flock
        # exits, a few ms later on the host; nothing here needs to wait for that.
        # If the connection is gone, so is the lock.
        with suppress(paramiko.SSHException, EOFError, OSError):
            channel.shutdown_write()
        channel.close()
