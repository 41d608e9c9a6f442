"""Which hosts a task acts on: ``fab -H`` runs a host task once for all its hosts, one
result line each, and refuses a host whose inventory role does not fit the task.

These run ``fab`` as a user would, against hosts that refuse connections on
loopback: what is proven is the fan-out, not SSH (the lab proves that)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from invoke import Config, Context

from tasks import inventory, users
from tasks.inventory import ENV_VAR, Inventory
from tasks.remote.fanout import hosts_for
from tests.unit.conftest import base_inventory

REPO = Path(__file__).resolve().parents[2]
FAB = str(Path(sys.executable).parent / "fab")


@pytest.fixture
def unreachable(write_inventory: Callable[..., Path], pki_inv: Inventory) -> Path:
    """An inventory (with a CA in its state) whose two registry hosts refuse SSH."""
    data = base_inventory()
    data["hosts"] = {
        "reg-a": {"hostname": "127.0.0.1", "port": 1, "role": "registry"},
        "reg-b": {"hostname": "127.0.0.1", "port": 1, "role": "registry"},
        "client1": {"hostname": "127.0.0.1", "port": 1, "role": "client"},
    }
    return write_inventory(data)


def fab(inv_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FAB, *args],
        cwd=REPO,
        env={**os.environ, ENV_VAR: str(inv_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_one_run_for_all_hosts_with_a_line_each_and_one_summary(unreachable: Path) -> None:
    out = fab(unreachable, "-H", "reg-a,reg-b", "check-expiry")
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    for alias in ("reg-a", "reg-b"):
        assert any(
            line.startswith(f"[{alias}] expiry: failed (") and "connection refused" in line
            for line in lines
        ), out.stdout
    assert lines.count("0 changed, 0 unchanged, 2 failed") == 1
    assert out.stderr.strip() == "error: check-expiry failed on reg-a, reg-b"
    assert "Traceback" not in out.stderr


def test_a_deploy_rolls_and_stops_at_the_first_failure(unreachable: Path) -> None:
    users.set_password(inventory.load(unreachable), "alice", "correct horse battery")
    out = fab(unreachable, "-H", "reg-a,reg-b", "deploy")
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("[reg-a] deploy: failed (") for line in lines), out.stderr
    assert (
        "[reg-b] deploy: skipped (not started: the roll stopped at reg-a; it runs what it ran)"
        in lines
    )
    assert out.stderr.strip() == "error: deploy failed on reg-a"


def test_one_host_down_does_not_hide_the_others_in_catalog(unreachable: Path) -> None:
    state = inventory.load(unreachable).state_path
    (state / "probe-password").write_text("x" * 43)
    (state / "probe.htpasswd").write_text("regkit-probe:$2y$05$x\n")
    out = fab(unreachable, "-H", "reg-a,reg-b", "catalog", "--json")
    assert out.returncode == 1
    assert out.stdout.strip() == "[]"
    assert "[reg-a] catalog: failed (" in out.stderr and "[reg-b] catalog: failed (" in out.stderr
    assert "error: catalog failed on reg-a, reg-b" in out.stderr


@pytest.mark.parametrize(
    ("task", "alias", "its_role", "task_role"),
    [
        ("deploy", "client1", "client", "registry"),
        ("trust-ca", "reg-a", "registry", "client"),
        ("gc", "client1", "client", "registry"),
    ],
)
def test_a_host_of_another_role_is_refused_in_one_line(
    unreachable: Path, task: str, alias: str, its_role: str, task_role: str
) -> None:
    out = fab(unreachable, "-H", alias, task)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: {unreachable}: hosts.{alias}: its role is '{its_role}', and {task} acts on "
        f"{task_role} hosts; check -H, or add --force to {task} it anyway"
    ]
    assert out.stdout == ""


def test_force_acts_on_a_host_of_another_role(unreachable: Path) -> None:
    out = fab(unreachable, "-H", "client1", "check-expiry", "--force")
    assert out.returncode == 1
    assert "[client1] expiry: failed (" in out.stdout


def context(hosts: list[str]) -> Context:
    """A Context as the executor leaves it for a task run with ``fab -H <hosts>``."""
    return Context(config=Config(overrides={"regkit": {"hosts": hosts}}))


def test_without_h_a_task_acts_on_every_host_of_its_role(pki_inv: Inventory) -> None:
    assert hosts_for(context([]), pki_inv, "registry", "deploy") == ["regbox"]
    assert hosts_for(context([]), pki_inv, "client", "trust-ca") == ["client1"]
    assert hosts_for(context(["regbox"]), pki_inv, "registry", "gc") == ["regbox"]
    assert hosts_for(Context(), pki_inv, "registry", "gc") == ["regbox"]


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file and folder below ``folder``: its mode and content."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mode, p.read_bytes() if p.is_file() else b"")
        for p in folder.rglob("*")
    }


@pytest.mark.parametrize(
    ("task", "deployed", "code", "says"),
    [
        ("status", False, 1, "status failed on reg-a"),
        ("users", False, 0, "not deployed from"),
        ("check-expiry", False, 1, "check-expiry failed on reg-a"),
        ("catalog", False, 1, "no deploy login here yet; run 'fab deploy' first"),
        ("status", True, 1, "status failed on reg-a"),
        ("users", True, 1, "users failed on reg-a"),
        ("catalog", True, 1, "catalog failed on reg-a"),
    ],
)
def test_read_only_tasks_write_nothing_locally(
    unreachable: Path, task: str, deployed: bool, code: int, says: str
) -> None:
    """With a CA and a user, before a deploy (no probe login, no http secret) and after
    one: the read-only tasks make and change no file, whatever the hosts answer."""
    inv = inventory.load(unreachable)
    users.set_password(inv, "alice", "correct horse battery")
    if deployed:
        users.ensure_probe_credential(inv)
    before = snapshot(inv.state_path)
    out = fab(unreachable, "-H", "reg-a", task)
    assert (out.returncode, "Traceback" in out.stderr) == (code, False), out.stderr
    assert says in out.stdout + out.stderr
    assert snapshot(inv.state_path) == before
