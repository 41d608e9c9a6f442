"""Fixtures for unit tests: a throwaway inventory and state folder per test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks import inventory, pki, pki_secrets
from tasks.inventory import Inventory

PASSPHRASE = "unit-test-passphrase"


def base_inventory() -> dict[str, Any]:
    return {
        "registry": {
            "domain": "registry.unit.test",
            "extra_names": ["registry", "alt.unit.test"],
            "extra_ips": ["127.0.0.1", "::1"],
            "images": {"registry": "registry:2.8.3", "nginx": "nginx:1.27.3-bookworm"},
        },
        "users": {"bcrypt_rounds": 10, "min_password_length": 12},
        "state_dir": "state",
        "hosts": {
            "regbox": {"hostname": "127.0.0.1", "port": 2222, "role": "registry"},
            "client1": {"hostname": "127.0.0.1", "port": 2223, "role": "client"},
        },
    }


@pytest.fixture
def write_inventory(tmp_path: Path) -> Callable[..., Path]:
    """Write an inventory file (a dict as YAML, or raw text/bytes) and return its path."""

    def write(data: dict[str, Any] | str | bytes | None = None, name: str = "inv.yaml") -> Path:
        path = tmp_path / name
        if data is None:
            data = base_inventory()
        if isinstance(data, dict):
            data = yaml.safe_dump(data, sort_keys=False)
        if isinstance(data, str):
            data = data.encode()
        path.write_bytes(data)
        return path

    return write


@pytest.fixture
def inv(write_inventory: Callable[..., Path]) -> Inventory:
    return inventory.load(write_inventory())


@pytest.fixture
def pki_inv(inv: Inventory, monkeypatch: pytest.MonkeyPatch) -> Inventory:
    """An inventory whose state folder already has a CA and a server certificate."""
    monkeypatch.setenv(pki_secrets.PASSPHRASE_ENV, PASSPHRASE)
    pki.init_pki(inv, PASSPHRASE)
    return inv
