"""Benchmarks on the lab (``make bench``, ``python -m bench.run``); see docs/benchmarks.md."""

from __future__ import annotations

import time
from collections.abc import Callable


def seconds(action: Callable[[], object]) -> float:
    """Wall time of ``action()``."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start
