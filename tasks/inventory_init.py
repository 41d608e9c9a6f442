"""``invoke inventory.init``: a commented starter inventory for a real server.

Writes ``inventory.local.yaml`` (git-ignored; or the path given) from
``templates/inventory.yaml.j2``: the registry's domain and its first host, whose host
key comes from ``ssh-keyscan`` and is shown (with its fingerprint) for confirmation
before it is pinned. Never replaces a file that is there. The result is loaded
back, so a file it writes always passes ``inventory.check``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from invoke import Context

from tasks import render
from tasks.cli import confirm, task
from tasks.errors import InventoryError, RegkitError
from tasks.report import Report
from tasks.state import atomic_write

DEFAULT = "inventory.local.yaml"
_TARGET = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9.:-]+?)(?::(?P<port>\d+))?$"
)


@dataclass(frozen=True)
class Target:
    """Where the first host is: ``[user@]host[:port]``."""

    hostname: str
    user: str = ""
    port: int = 0


def parse_target(text: str) -> Target:
    """``[user@]host[:port]``, or an error saying what is expected (pure)."""
    match = _TARGET.match(text.strip())
    if not match or not match["host"]:
        raise RegkitError(f"--host {text!r}: give [user@]host[:port], e.g. admin@192.0.2.10")
    return Target(match["host"], match["user"] or "", int(match["port"] or 0))


def keyscan(target: Target) -> str:
    """The host's Ed25519 key as ``ssh-keyscan`` prints it, host field and all."""
    argv = ["ssh-keyscan", "-t", "ed25519", *(["-p", str(target.port)] if target.port else [])]
    try:
        done = subprocess.run(
            [*argv, target.hostname], capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError:
        raise RegkitError(
            "no ssh-keyscan here; install openssh-client, or give --host-key"
        ) from None
    except subprocess.TimeoutExpired:
        raise RegkitError(f"ssh-keyscan {target.hostname}: no answer within 30 s") from None
    lines = [line for line in done.stdout.splitlines() if line and not line.startswith("#")]
    if not lines:
        raise RegkitError(
            f"ssh-keyscan {target.hostname} found no Ed25519 host key: is sshd running there "
            "(and on that port)? Give the key with --host-key if you have it"
        )
    return lines[0]


def fingerprint(line: str) -> str:
    """The key's SHA256 fingerprint, as ``ssh-keygen -l`` shows it."""
    done = subprocess.run(
        ["ssh-keygen", "-l", "-f", "-"], input=line, capture_output=True, text=True, check=False
    )
    return done.stdout.split()[1] if done.returncode == 0 and done.stdout else "unknown"


def starter(
    domain: str, alias: str, target: Target, key_line: str, key_file: str, fingerprint: str
) -> str:
    """The starter inventory's text (pure)."""
    return render.render(
        "inventory.yaml.j2",
        {
            "domain": domain,
            "organization": domain.split(".", 1)[-1],
            "alias": alias,
            "hostname": target.hostname,
            "port": target.port,
            "user": target.user,
            "key_file": key_file,
            "host_key": key_line,
            "fingerprint": fingerprint,
        },
    )


def ask(what: str, given: str) -> str:
    """``given``, or asked at a terminal; an error naming the option elsewhere."""
    if given:
        return given
    if not sys.stdin.isatty():
        raise RegkitError(f"give --{what} (no terminal to ask it at)")
    return input(f"{what.replace('-', ' ')}: ").strip()


@task(
    name="init",
    # No -h for --host: -h is help.
    auto_shortflags=False,
    help={
        "path": f"Where to write it (default: {DEFAULT}, git-ignored).",
        "domain": "The registry's DNS name, e.g. registry.example.com.",
        "host": "The registry host: [user@]host[:port].",
        "alias": "Its name in the inventory (fab -H ALIAS); default regbox.",
        "key-file": "The SSH key to log in with (default: ~/.ssh/config's, then ssh's).",
        "host-key": "The host key line, if you have it checked already (no ssh-keyscan).",
        "yes": "Pin the scanned host key without asking.",
    },
)
def init(
    c: Context,
    path: str = DEFAULT,
    domain: str = "",
    host: str = "",
    alias: str = "regbox",
    key_file: str = "",
    host_key: str = "",
    yes: bool = False,
) -> None:
    """Write a commented starter inventory: the domain, the first host, its pinned key."""
    from tasks import inventory

    where = Path(path)
    if where.exists():
        raise RegkitError(f"{where} exists; it is kept: edit it, or give another path")
    domain = ask("domain", domain)
    target = parse_target(ask("host", host))
    line = host_key or keyscan(target)
    report, shown = Report(), fingerprint(line)
    if not host_key:
        report.info(f"{target.hostname} presented: {line}")
        report.info(f"fingerprint: {shown} (compare it out of band)")
        if not yes:
            confirm("Pin this host key?")
    atomic_write(where, starter(domain, alias, target, line, key_file, shown), mode=0o644)
    try:
        inventory.load(where)
    except InventoryError as exc:
        where.unlink()
        raise RegkitError(f"{exc} (nothing was written)") from None
    report.changed("local", "inventory", f"wrote {where}: {domain}, host {alias}")
    report.info(f"next: export REGISTRY_INVENTORY={where.resolve()}; invoke pki.init")
    report.summary()
