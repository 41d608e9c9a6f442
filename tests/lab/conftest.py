"""Lab fixtures: the lab comes up once per test run and goes down at its end.

Every test in this folder is marked ``lab`` (``pytest -m "not lab"`` runs the unit
tests alone). ``REGKIT_LAB_KEEP=1`` keeps the lab running after the run, so the
next run starts in seconds; the test of ``lab.down`` is then skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fabric
import pytest
from invoke import Context

from tasks import inventory as inventory_module
from tasks.connect import connect, open_connection
from tasks.inventory import ENV_VAR, Inventory
from tasks.lab import INVENTORY, LAB_DIR

HERE = Path(__file__).resolve().parent
REPO = LAB_DIR.parent
KEEP = os.environ.get("REGKIT_LAB_KEEP") == "1"
# Tests that must run after every other lab test (they take the lab down).
LAST = ("test_lab_down.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything in tests/lab ``lab``, and run the lab.down tests last."""
    ours = [item for item in items if HERE in Path(item.path).parents]
    for item in ours:
        item.add_marker(pytest.mark.lab)
    last = [item for item in ours if Path(item.path).name in LAST]
    items[:] = [item for item in items if item not in last] + last


def invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``invoke ARGS`` from the repository as a user would; never raises."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO,
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


def must(proc: subprocess.CompletedProcess[str]) -> str:
    """The output of a finished command, or a test failure showing all of it."""
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(proc.args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )
    return proc.stdout


@dataclass
class Lab:
    """The running lab: its inventory and how to reach its hosts."""

    inventory_path: Path
    inventory: Inventory
    env: dict[str, str] = field(default_factory=dict)

    def invoke(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``invoke ARGS`` with REGISTRY_INVENTORY set to the lab's inventory."""
        return invoke(*args, env=self.env)

    def connect(self, alias: str, inv: Inventory | None = None) -> fabric.Connection:
        """An open Fabric connection to ``alias``, host key pinned from the inventory."""
        ctx = Context(config=fabric.Config(overrides={"run": {"in_stream": False}}))
        return open_connection(connect(inv or self.inventory, alias, ctx))

    def reload(self) -> None:
        """Read the inventory again (after lab.up or lab.reboot rewrote it)."""
        self.inventory = inventory_module.load(self.inventory_path)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """Bring the lab up (fast when its images are cached); take it down at the end."""
    must(invoke("lab.up"))
    env = {**os.environ, ENV_VAR: str(INVENTORY)}
    yield Lab(INVENTORY, inventory_module.load(INVENTORY), env)
    if not KEEP:
        must(invoke("lab.down"))
