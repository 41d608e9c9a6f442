"""``lab.down`` removes everything of the lab but its cached images (runs last)."""

from __future__ import annotations

import pytest

from lab.engine import Engine
from lab.settings import INVENTORY, PREFIX, STATE_DIR, Settings
from tests.lab.conftest import KEEP, Lab, must


def _names(engine: Engine, kind: str) -> list[str]:
    """Every container, network or volume of the engine, the lab's or not."""
    if kind == "container":
        return engine.run("container", "ls", "--all", "--format", "{{.Names}}").stdout.split()
    return engine.run(kind, "ls", "--format", "{{.Name}}").stdout.split()


@pytest.mark.skipif(KEEP, reason="REGKIT_LAB_KEEP=1 keeps the lab running")
def test_down_leaves_no_container_network_or_volume(lab: Lab) -> None:
    engine = Engine(Settings())
    assert [n for n in _names(engine, "container") if n.startswith(PREFIX)], "lab not up"
    out = must(lab.invoke("lab.down"))
    assert "removed" in out
    for kind in ("container", "network", "volume"):
        names = _names(engine, kind)
        assert not [n for n in names if n.startswith(PREFIX)], f"{kind}s left: {names}"
        assert not engine.labelled(kind), f"labelled {kind}s left"
    assert not INVENTORY.exists()
    assert not STATE_DIR.exists()
    assert engine.image_id(f"{PREFIX}/nginx:1.22.1"), "lab.down must keep the cached images"
    again = must(lab.invoke("lab.down"))
    assert again.rstrip().endswith("no changes")
