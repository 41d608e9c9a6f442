"""invoke inventory.init: the starter inventory it writes, and what it refuses (pure parts,
and the task run as a script would run it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import inventory
from tasks.errors import RegkitError
from tasks.inventory_init import Target, parse_target, starter

ROOT = Path(__file__).resolve().parent.parent.parent
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("192.0.2.10", Target("192.0.2.10")),
        ("admin@regbox.example.com", Target("regbox.example.com", "admin")),
        ("admin@192.0.2.10:2222", Target("192.0.2.10", "admin", 2222)),
    ],
)
def test_the_host_is_user_host_and_port(text: str, target: Target) -> None:
    assert parse_target(text) == target


def test_anything_else_is_refused() -> None:
    with pytest.raises(RegkitError, match=r"give \[user@\]host\[:port\]"):
        parse_target("admin@")


def test_the_starter_loads_and_pins_the_key_as_keyscan_printed_it(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    target = Target("192.0.2.10", "admin", 2222)
    path.write_text(
        starter(
            "registry.example.com", "regbox", target, f"[192.0.2.10]:2222 {KEY}", "", "SHA256:x"
        )
    )
    inv = inventory.load(path)
    assert inv.registry.domain == "registry.example.com"
    regbox = inv.hosts["regbox"]
    assert (regbox.hostname, regbox.port, regbox.user, regbox.role) == (
        "192.0.2.10",
        2222,
        "admin",
        "registry",
    )
    assert regbox.host_key == KEY


def run_init(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(ROOT), "inventory.init", *args],
        cwd=tmp_path, env=dict(os.environ), stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


def test_it_writes_once_and_never_over_a_file(tmp_path: Path) -> None:
    args = ["--domain", "registry.example.com", "--host", "admin@192.0.2.10"]
    first = run_init(tmp_path, *args, "--host-key", f"192.0.2.10 {KEY}")
    assert first.returncode == 0, first.stderr
    written = (tmp_path / "inventory.local.yaml").read_text()
    again = run_init(tmp_path, *args, "--host-key", f"192.0.2.10 {KEY}")
    assert again.returncode == 1
    assert (
        again.stderr.strip()
        == "error: inventory.local.yaml exists; it is kept: edit it, or give another path"
    )
    assert (tmp_path / "inventory.local.yaml").read_text() == written


def test_a_key_for_another_host_writes_nothing(tmp_path: Path) -> None:
    args = ["--domain", "registry.example.com", "--host", "admin@192.0.2.10"]
    refused = run_init(tmp_path, *args, "--host-key", f"192.0.2.99 {KEY}")
    assert refused.returncode == 1
    assert "the ssh-keyscan line is for 192.0.2.99, but this host is 192.0.2.10" in refused.stderr
    assert not (tmp_path / "inventory.local.yaml").exists()
