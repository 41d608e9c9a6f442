"""Host keys: a damaged known_hosts file is one clear line, not a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest

from tasks import inventory
from tasks.errors import InventoryError
from tasks.remote.connect import Transport, connect
from tests.unit.conftest import base_inventory


def test_damaged_known_hosts_line_is_a_clear_error(
    write_inventory: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "known_hosts").write_text("[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1N\n")
    inv = inventory.load(write_inventory({**base_inventory(), "known_hosts": "known_hosts"}))
    with pytest.raises(InventoryError, match=r"known_hosts: .*known_hosts has a damaged line; fix"):
        connect(inv, "regbox")


def test_connections_ask_for_aes_gcm_first_and_keep_the_rest(
    write_inventory: Callable[..., Path],
) -> None:
    conn = connect(inventory.load(write_inventory(base_inventory())), "regbox")
    assert conn.connect_kwargs["transport_factory"] is Transport
    preferred = Transport._preferred_ciphers
    assert preferred[:2] == ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
    assert sorted(preferred) == sorted(paramiko.Transport._preferred_ciphers)
