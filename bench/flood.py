"""A flood of wrong passwords (issue #22), measured as users meet it: one client sends
wrong passwords for a real user at 50 a second for 30 s, each on a new connection,
while another client, logged in as a user at the default bcrypt cost, runs
``docker pull`` (a token, so a password check, each time) and ``GET /_ping``.

The lab test ``tests/lab/test_attacker.py`` runs the same measurement and holds it to
the issue's bars: pulls at most twice their quiet time, ``/_ping`` under 100 ms.
"""

from __future__ import annotations

import shlex
import statistics
import time
import uuid
from dataclasses import dataclass

from bench.auth import as_user, build_script, login
from tasks.inventory import Inventory
from tasks.remote.target import Target, open_target

RATE = 50  # wrong passwords a second
SECONDS = 30
ROUNDS = 7  # pulls, quiet and flooded (medians)
PINGS = (10, 20)  # quiet, flooded


def flood_script(inv: Inventory, user: str, seconds: int = SECONDS, rate: int = RATE) -> str:
    """Wrong passwords for ``user`` at ``rate`` a second for ``seconds`` (a tenth of a
    second's worth at a time, each batch on its own schedule), each on a new
    connection, in the background; each answer's status goes to /tmp/flood.codes, and
    how long sending took (ms) to /tmp/flood.ms."""
    url = f"{inv.registry.url}/auth/token?service={inv.registry.domain}"
    request = (
        f'curl -s -o /dev/null -m 60 -w "%{{http_code}}\\n" -u {user}:wrong-password-1 '
        f'--cacert {inv.registry.certs_d} "{url}" >> /tmp/flood.codes &'
    )
    loop = (
        "start=$(date +%s%N); "
        f"for s in $(seq {seconds * 10}); do for k in $(seq {rate // 10}); do {request} done; "
        "late=$(( start + s * 100000000 - $(date +%s%N) )); "
        "[ $late -gt 0 ] && sleep $(printf 0.%09d $late); done; "
        "echo $(( ($(date +%s%N) - start) / 1000000 )) > /tmp/flood.ms; "
        "wait; echo done >> /tmp/flood.codes"
    )
    return (
        f"rm -f /tmp/flood.codes /tmp/flood.ms; nohup sh -c {shlex.quote(loop)} >/dev/null 2>&1 &"
    )


def timed_pull(t: Target, ref: str, docker: str = "") -> float:
    """Seconds for a fresh ``docker pull`` (the image removed first). ``docker`` is a
    prefix that picks whose login docker uses."""
    out = t.check(
        f"{docker}docker rmi -f {ref} >/dev/null 2>&1; s=$(date +%s%N); "
        f"{docker}docker pull -q {ref} >/dev/null && e=$(date +%s%N) && "
        "echo $(( (e - s) / 1000000 ))",
        f"pulling {ref}",
    ).stdout
    return int(out.strip()) / 1000


def ping_times(t: Target, inv: Inventory, count: int) -> list[float]:
    """``count`` GET /_ping, 0.2 s apart, each on a new connection: seconds each."""
    out = t.check(
        f"for i in $(seq {count}); do curl -sS -o /dev/null --fail -w '%{{time_total}}\\n' "
        f"--cacert {inv.registry.certs_d} {inv.registry.url}/_ping; sleep 0.2; done",
        "timing /_ping",
    ).stdout
    return [float(line) for line in out.split()]


@dataclass
class Flood:
    sent: int
    sending_s: float
    checked: int  # answered 401: the token service checked the password
    limited: int  # answered 429 by nginx, unchecked
    quiet_pulls: list[float]
    flood_pulls: list[float]
    quiet_ping: list[float]
    flood_ping: list[float]

    @property
    def pull_ratio(self) -> float:
        return statistics.median(self.flood_pulls) / statistics.median(self.quiet_pulls)

    def figures(self) -> dict[str, float]:
        return {
            "wrong_passwords_sent": self.sent,
            "wrong_passwords_per_s": self.sent / self.sending_s,
            "checked_401": self.checked,
            "refused_unchecked_429": self.limited,
            "pull_quiet_s": statistics.median(self.quiet_pulls),
            "pull_flooded_s": statistics.median(self.flood_pulls),
            "pull_flooded_over_quiet": self.pull_ratio,
            "ping_quiet_max_ms": max(self.quiet_ping) * 1000,
            "ping_flooded_max_ms": max(self.flood_ping) * 1000,
            "ping_flooded_median_ms": statistics.median(self.flood_ping) * 1000,
        }

    def line(self) -> str:
        f = self.figures()
        return (
            f"flood: {self.sent} wrong passwords in {self.sending_s:.1f} s "
            f"({f['wrong_passwords_per_s']:.0f}/s): {self.checked} checked (401), "
            f"{self.limited} refused unchecked (429); docker pull median "
            f"{f['pull_quiet_s']:.2f} s quiet, {f['pull_flooded_s']:.2f} s flooded "
            f"({self.pull_ratio:.2f}x); /_ping max {f['ping_quiet_max_ms']:.0f} ms quiet, "
            f"{f['ping_flooded_max_ms']:.0f} ms flooded (median "
            f"{f['ping_flooded_median_ms']:.0f})"
        )


def measure(
    inv: Inventory, flooder: Target, client: Target, user: str, ref: str, docker: str = ""
) -> Flood:
    """Quiet pulls and pings on ``client``; then the same while ``flooder`` sends wrong
    passwords for ``user``, from 3 s into the flood (its first burst spent)."""
    quiet_pulls = [timed_pull(client, ref, docker) for _ in range(ROUNDS)]
    quiet_ping = ping_times(client, inv, PINGS[0])
    flooder.check(flood_script(inv, user), "starting the flood")
    started = time.monotonic()
    time.sleep(3)
    flood_pulls = [timed_pull(client, ref, docker) for _ in range(ROUNDS)]
    flood_ping = ping_times(client, inv, PINGS[1])
    if time.monotonic() - started > SECONDS:
        raise RuntimeError("the measurements outlasted the flood")
    flooder.check(
        "for i in $(seq 120); do grep -q '^done$' /tmp/flood.codes && exit 0; sleep 1; done; "
        "exit 1",
        "waiting for the flood's last answers",
    )
    codes = flooder.check("grep -v '^done$' /tmp/flood.codes", "reading the answers").stdout
    statuses = codes.split()
    sending = int(flooder.check("cat /tmp/flood.ms", "reading its length").stdout) / 1000
    return Flood(
        sent=len(statuses),
        sending_s=sending,
        checked=statuses.count("401"),
        limited=statuses.count("429"),
        quiet_pulls=quiet_pulls,
        flood_pulls=flood_pulls,
        quiet_ping=quiet_ping,
        flood_ping=flood_ping,
    )


def flood_bench(inv: Inventory, user: tuple[str, str]) -> dict[str, float]:
    """The flood from client1 while client2, logged in as ``user`` (default cost),
    pulls a new 1-layer image."""
    flooder, client = (open_target(inv, alias) for alias in ("client1", "client2"))
    login(client, inv, *user)
    ref = f"{inv.registry.address}/bench/flood:{uuid.uuid4().hex[:10]}"
    client.check(build_script(ref, layers=1), "building an image")
    client.check(as_user(user[0]) + f"docker push -q {ref} >/dev/null", "pushing it")
    result = measure(inv, flooder, client, user[0], ref, docker=as_user(user[0]))
    print(result.line(), flush=True)
    return result.figures()
