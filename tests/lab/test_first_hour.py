"""A new operator's first hour on a real server (#21), on lab hosts treated as real ones."""

from __future__ import annotations

import subprocess
from typing import Any

from tests.lab.conftest import Lab, fab, inventory_variant, must


def test_a_host_key_pasted_as_ssh_keyscan_prints_it_pins_the_host(lab: Lab) -> None:
    port = lab.inventory.hosts["client1"].port
    scanned = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    assert scanned.startswith(f"[127.0.0.1]:{port} ssh-ed25519 ")

    def pin(data: dict[str, Any]) -> None:
        data["hosts"]["client1"]["host_key"] = scanned

    variant = inventory_variant(lab, "keyscan", pin)
    try:
        assert variant.inventory.hosts["client1"].host_key == scanned.split(" ", 1)[1]
        out = must(fab(variant, "-H", "client1", "trust-ca", "--dry-run"))
        assert "[client1] " in out and "failed" not in out
    finally:
        variant.inventory_path.unlink()
