"""Which hosts a task acts on, and running it on each: one host's failure never hides
another's result.

``fab -H a,b TASK`` would call a task once per host, each with its own
Connection. Tasks that act on inventory hosts (marked by :func:`tasks.cli.task`
with a ``role``) instead run once, with every ``-H`` alias, through
:class:`HostsExecutor`, Fabric's executor extended at its documented seam
(``tasks.executor_class`` in ``fabric.yaml``): so hosts can run in parallel, each
with its own result line, under one summary. Without ``-H``, a task acts on
every host whose inventory role fits it.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fabric
from invoke import Call, Context

from tasks.cli import ROLE_ATTRIBUTE
from tasks.errors import InventoryError, RegkitError, RemoteError
from tasks.inventory import Inventory
from tasks.remote.target import Target, open_target
from tasks.report import Report

# How many hosts a parallel task talks to at once.
MAX_PARALLEL = 32


class HostsExecutor(fabric.Executor):
    """Fabric's executor, except that a task marked with a role runs once for all
    ``-H`` hosts, which it finds in ``c.config.regkit.hosts``."""

    def expand_calls(self, calls: list[Any], apply_hosts: bool = True) -> list[Any]:
        hosts = [h.strip() for h in (self.core[0].args.hosts.value or "").split(",")]
        self.config.regkit = {"hosts": [h for h in hosts if h]}
        expanded, seen = [], set()
        for call in super().expand_calls(calls, apply_hosts):
            if getattr(call.task, ROLE_ATTRIBUTE, None) is None:
                expanded.append(call)
            elif call.task not in seen:
                seen.add(call.task)
                expanded.append(
                    Call(call.task, called_as=call.called_as, args=call.args, kwargs=call.kwargs)
                )
        return expanded


def named_hosts(c: Context) -> list[str]:
    """The aliases given with ``fab -H`` (none outside fab, or without -H)."""
    regkit = c.config.get("regkit") or {}
    return list(regkit.get("hosts") or [])


def hosts_for(c: Context, inv: Inventory, role: str, task: str, force: bool = False) -> list[str]:
    """The hosts ``task`` acts on: every ``-H`` alias, or every host with ``role``.

    A named host whose inventory role is another is refused (``force`` allows it):
    ``fab -H client1 deploy`` must not quietly turn a client into a registry host.
    """
    named = named_hosts(c)
    for alias in named:
        host = inv.host(alias)
        if host.role != role and not force:
            raise InventoryError(
                f"{inv.source}: hosts.{alias}: its role is {host.role!r}, and {task} acts on "
                f"{role} hosts; check -H, or add --force to {task} it anyway"
            )
    if named:
        return named
    aliases = inv.with_role(role)  # type: ignore[arg-type]
    if not aliases:
        raise RemoteError(f"{inv.source}: no host has role {role!r}; name one with -H")
    return aliases


def each_host(
    c: Context,
    inv: Inventory,
    aliases: list[str],
    report: Report,
    task: str,
    work: Callable[[Target], None],
    *,
    step: str = "",
    parallel: bool = False,
    rolling: bool = False,
    hint: str = "",
) -> None:
    """Run ``work`` on each host (at once when ``parallel``); one host's failure never
    stops the others, unless ``rolling``: then the hosts run one at a time, and the
    first failure stops the roll, the hosts after it left as they are (``skipped``).
    Each failure is a ``failed`` line; at the end the summary, then one error naming
    the hosts that failed (with ``hint``, what to do about it).
    """

    def one(alias: str) -> str | None:
        try:
            work(open_target(inv, alias, c))
        except RegkitError as exc:
            report.failed(alias, step or task, str(exc).removeprefix(f"{alias}: "))
            return alias
        except Exception as exc:  # one host's surprise must not hide the others
            report.failed(alias, step or task, f"unexpected {type(exc).__name__}: {exc}")
            return alias
        return None

    if parallel and not rolling:
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(aliases))) as pool:
            failed = [alias for alias in pool.map(one, aliases) if alias]
    elif rolling:
        failed = []
        for index, alias in enumerate(aliases):
            if one(alias):
                failed.append(alias)
                for rest in aliases[index + 1 :]:
                    why = f"not started: the roll stopped at {alias}; it runs what it ran"
                    report.skipped(rest, step or task, why)
                break
    else:
        failed = [alias for alias in aliases if one(alias)]
    report.summary()
    if failed:
        raise RemoteError(f"{task} failed on {', '.join(failed)}{hint}")
