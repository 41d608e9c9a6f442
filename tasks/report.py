"""What a person watching a run sees: one line per step and host, then a summary.

Every step ends as ``changed``, ``unchanged`` or ``failed``, with why; a run ends
with a count of each. Lines are flushed at once so that progress is visible.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO

CHANGED = "changed"
UNCHANGED = "unchanged"
FAILED = "failed"
SKIPPED = "skipped"
OK = "ok"

_COLOURS = {CHANGED: "33", UNCHANGED: "32", FAILED: "31", SKIPPED: "36", OK: "32"}


@dataclass
class Report:
    """Collects step results and prints each as it happens."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)
    results: list[tuple[str, str, str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _colour(self, status: str) -> str:
        if not getattr(self.stream, "isatty", lambda: False)():
            return status
        return f"\033[{_COLOURS[status]}m{status}\033[0m"

    def step(self, host: str, step: str, status: str, why: str = "") -> None:
        """Record and print one step's result."""
        self.results.append((host, step, status, why))
        line = f"[{host}] {step}: {self._colour(status)}"
        if why:
            line += f" ({why})"
        self._print(line)

    def _print(self, line: str) -> None:
        with self._lock:
            print(line, file=self.stream, flush=True)

    def changed(self, host: str, step: str, why: str = "") -> None:
        self.step(host, step, CHANGED, why)

    def unchanged(self, host: str, step: str, why: str = "") -> None:
        self.step(host, step, UNCHANGED, why)

    def failed(self, host: str, step: str, why: str = "") -> None:
        self.step(host, step, FAILED, why)

    def skipped(self, host: str, step: str, why: str = "") -> None:
        self.step(host, step, SKIPPED, why)

    def ok(self, host: str, step: str, why: str = "") -> None:
        """A check that passed and changed nothing."""
        self.step(host, step, OK, why)

    def info(self, message: str) -> None:
        """Print a line that is not a step result (a hint, a URL, a warning)."""
        self._print(message)

    def count(self, status: str, host: str = "") -> int:
        """How many steps ended with ``status`` (on ``host`` only, if given)."""
        return sum(1 for r in self.results if r[2] == status and (not host or r[0] == host))

    def summary(self) -> str:
        """Print and return the closing line: counts, or "no changes"."""
        changed, failed = self.count(CHANGED), self.count(FAILED)
        parts = [f"{changed} changed", f"{self.count(UNCHANGED)} unchanged"]
        if self.count(OK):
            parts.append(f"{self.count(OK)} ok")
        if self.count(SKIPPED):
            parts.append(f"{self.count(SKIPPED)} skipped")
        if failed:
            parts.append(f"{failed} failed")
        line = ", ".join(parts)
        if not changed and not failed:
            line += ": no changes"
        self._print(line)
        return line


PROGRESS_EVERY = 2.0  # seconds between progress lines


class Progress:
    """A line at most every few seconds for a long transfer: ``[host] what: bytes so
    far, of how many, and the rate``."""

    def __init__(self, report: Report, alias: str, total: int, what: str) -> None:
        self.report, self.alias, self.total, self.what = report, alias, total, what
        self.done, self.start = 0, time.monotonic()
        self.last = self.start

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY:
            self.last = now
            rate = self.done / (now - self.start) / 1e6
            self.report.info(
                f"[{self.alias}] {self.what}: {human_size(self.done)} of "
                f"{human_size(self.total)}, {rate:.1f} MB/s"
            )


def human_size(size: int) -> str:
    """``512 B``, ``64.4 KiB``, ``3.5 MiB``, ``2.0 GiB`` (pure)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def plural(count: int, noun: str, nouns: str = "") -> str:
    """``1 tag``, ``2 tags``; ``nouns`` when the plural is not ``noun + "s"`` (pure)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def aligned(rows: list[tuple[str, ...]]) -> str:
    """Rows as text columns, two spaces apart, the first row being the header (pure)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


# What a terminal must never get raw from a registry or a file: C0 and C1 controls (ESC
# starts a sequence that sets the title or moves the cursor, CR rewrites the line; C1's
# CSI is ESC [ in one character), DEL, and the bidi controls that reorder what follows
# (U+061C, U+200E-F, U+202A-E, U+2066-9), and the Unicode line and paragraph separators.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with each control character shown as its escape (``\\x1b``, ``\\u202e``),
    so that what a registry or an inventory holds is printed, never obeyed (pure)."""
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)
