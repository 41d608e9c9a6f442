"""The shape the code keeps: small modules, and the lab outside the product."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TASKS = Path(__file__).resolve().parents[2] / "tasks"


def test_no_module_in_tasks_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(TASKS)): n
        for path in TASKS.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 400
    }
    assert long == {}


def test_the_fabfile_loads_no_lab_code() -> None:
    probe = "import fabfile, sys; print(sorted(m for m in sys.modules if m.split('.')[0] == 'lab'))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=TASKS.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
