"""No task ends in a traceback: each one, run as a script would run it, with standard input
closed, and with its output closed after the first line (``| head -1``).

Every task of ``invoke --list`` (but the lab's) and of ``fab --list`` runs with no
arguments against an inventory whose hosts refuse connections (127.0.0.1, port 1),
a CA and two users in its state. A task that fails says so in one line (``error: …``,
or invoke's own line for a missing argument) and exits non-zero; one whose reader
went away ends quietly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks import inventory, pki, pki_secrets, users
from tests.unit.conftest import PASSPHRASE

ROOT = Path(__file__).resolve().parent.parent.parent
INVOKE = [sys.executable, "-m", "invoke"]
FAB = [str(Path(sys.executable).parent / "fab")]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def names(program: list[str]) -> list[str]:
    listed = subprocess.run(
        [*program, "--list", "--list-format=json"], cwd=ROOT, capture_output=True, text=True,
        check=True, timeout=60,
    )  # fmt: skip

    def walk(collection: dict[str, object], prefix: str = "") -> list[str]:
        found = [prefix + task["name"] for task in collection["tasks"]]  # type: ignore[attr-defined]
        for sub in collection["collections"]:  # type: ignore[attr-defined]
            found += walk(sub, prefix + sub["name"] + ".")
        return found

    return walk(json.loads(listed.stdout))


TASKS = [
    *(("invoke", name) for name in names(INVOKE) if not name.startswith("lab.")),
    *(("fab", name) for name in names(FAB) if "." not in name),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An inventory whose hosts refuse connections, with a CA and two users."""
    folder = tmp_path_factory.mktemp("no-traceback")
    hosts = {
        alias: {"hostname": "127.0.0.1", "port": 1, "role": role, "host_key": KEY}
        for alias, role in (("regbox", "registry"), ("client1", "client"))
    }
    path = folder / "inventory.yaml"
    path.write_text(
        yaml.safe_dump(
            {"registry": {"domain": "registry.unit.test"}, "state_dir": "state", "hosts": hosts}
        )
    )
    inv = inventory.load(path)
    pki.init_pki(inv, PASSPHRASE)
    users.set_password(inv, "alice", "correct horse battery")
    users.set_password(inv, "bob", "correct horse battery")
    return {**os.environ, inventory.ENV_VAR: str(path), pki_secrets.PASSPHRASE_ENV: PASSPHRASE}


def program(kind: str) -> list[str]:
    return INVOKE if kind == "invoke" else FAB


def test_every_task_is_driven() -> None:
    driven = {name for _, name in TASKS}
    assert {"deploy", "trust-ca", "users", "pki.init", "users.add", "state.restore"} <= driven


@pytest.mark.parametrize(("kind", "name"), TASKS)
def test_stdin_closed_is_one_line_never_a_traceback(
    env: dict[str, str], kind: str, name: str
) -> None:
    result = subprocess.run(
        [*program(kind), name], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 1, result.stderr


@pytest.mark.parametrize(("kind", "name"), TASKS)
def test_output_closed_after_a_line_ends_quietly(env: dict[str, str], kind: str, name: str) -> None:
    proc = subprocess.Popen(
        [*program(kind), name], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_no_passphrase_and_no_terminal_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    inventory_path = tmp_path / "inventory.yaml"
    inventory_path.write_text(Path(env[inventory.ENV_VAR]).read_text())
    bare = {k: v for k, v in env.items() if k != pki_secrets.PASSPHRASE_ENV}
    result = subprocess.run(
        [*INVOKE, "pki.init"], cwd=ROOT, env={**bare, inventory.ENV_VAR: str(inventory_path)},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        start_new_session=True,  # no controlling terminal, as under cron or CI
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: the CA passphrase is needed and there is no terminal to ask it at; set "
        "REGISTRY_CA_PASSPHRASE (scripts, CI) or run this at a terminal"
    )
