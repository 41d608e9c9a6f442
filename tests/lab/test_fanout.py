"""One host down never hides the others: check-expiry and catalog over regbox and a
registry host that does not answer (issue #14)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.lab.conftest import Lab, fab, must


@pytest.fixture
def with_a_host_down(registry: Lab) -> Iterator[dict[str, str]]:
    """The lab's inventory plus ``gone``, a registry host whose SSH port is closed."""
    data = yaml.safe_load(registry.inventory_path.read_text())
    data["hosts"]["gone"] = {"hostname": "127.0.0.1", "port": 1, "role": "registry"}
    path: Path = registry.inventory_path.with_name("inventory-host-down.yaml")
    path.write_text(yaml.safe_dump(data))
    try:
        yield {"REGISTRY_INVENTORY": str(path)}
    finally:
        path.unlink()


def test_check_expiry_answers_for_the_hosts_that_answer(
    registry: Lab, with_a_host_down: dict[str, str]
) -> None:
    out = fab(registry, "-H", "gone,regbox", "check-expiry", env=with_a_host_down)
    assert out.returncode == 1
    assert "[regbox] expiry: ok (CA and served certificate valid for 30+ days)" in out.stdout
    assert any(
        line.startswith("[gone] expiry: failed (gone (") and "connection refused" in line
        for line in out.stdout.splitlines()
    ), out.stdout
    assert out.stderr.strip() == "error: check-expiry failed on gone"


def test_catalog_lists_what_the_hosts_that_answer_hold(
    registry: Lab, with_a_host_down: dict[str, str]
) -> None:
    answered = must(fab(registry, "-H", "regbox", "catalog", "--json"))
    out = fab(registry, "-H", "gone,regbox", "catalog", "--json", env=with_a_host_down)
    assert out.returncode == 1
    assert json.loads(out.stdout) == json.loads(answered)
    assert "[regbox] catalog: ok (" in out.stderr
    assert "[gone] catalog: failed (" in out.stderr
    assert "error: catalog failed on gone" in out.stderr
