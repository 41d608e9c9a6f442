"""Benchmarks on the lab (issue #10): the no-op redeploy, the fan-out, local material.

Run with ``make bench`` (``python -m bench.run`` from the repository root). It
brings the lab up, runs each measurement a few times, prints the medians and
ratios and writes them to ``bench/results.json``. Speed is measured here, never
asserted in tests.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from tasks import inventory, pki, users
from tasks.lab import INVENTORY

ROOT = Path(__file__).resolve().parent.parent
PASSPHRASE = "bench-passphrase"  # noqa: S105 - the lab's throwaway CA
ENV = {**os.environ, "REGISTRY_INVENTORY": str(INVENTORY), pki.PASSPHRASE_ENV: PASSPHRASE}
RUNS = 5
DONE = re.compile(r"done in ([0-9.]+) s, (\d+) SSH commands")


def run(*argv: str, stdin: str = "") -> str:
    proc = subprocess.run(
        argv, cwd=ROOT, env=ENV, input=stdin, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def fab(*args: str) -> str:
    return run(str(Path(sys.executable).parent / "fab"), *args)


def invoke(*args: str, stdin: str = "") -> str:
    return run(sys.executable, "-m", "invoke", *args, stdin=stdin)


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def deploy_once() -> tuple[float, int]:
    """Wall time of ``fab -H regbox deploy`` and the SSH commands it reports."""
    start = time.perf_counter()
    out = fab("-H", "regbox", "deploy")
    wall = time.perf_counter() - start
    match = DONE.search(out)
    return wall, int(match.group(2)) if match else -1


def redeploy() -> dict[str, float]:
    first_wall, first_cmds, noop_wall, noop_cmds = [], [], [], []
    for _ in range(3):
        fab("-H", "regbox", "undeploy", "--purge-data", "--yes")
        wall, cmds = deploy_once()
        first_wall.append(wall)
        first_cmds.append(cmds)
        for _ in range(RUNS):
            wall, cmds = deploy_once()
            noop_wall.append(wall)
            noop_cmds.append(cmds)
    first, noop = statistics.median(first_wall), statistics.median(noop_wall)
    return {
        "first_deploy_s": first,
        "first_deploy_ssh_commands": statistics.median(first_cmds),
        "noop_deploy_s": noop,
        "noop_deploy_ssh_commands": statistics.median(noop_cmds),
        "noop_over_first": noop / first,
    }


def fan_out() -> dict[str, float]:
    clients = inventory.load(INVENTORY).with_role("client")
    one = statistics.median(timed(lambda: fab("-H", clients[0], "trust-ca")) for _ in range(RUNS))
    every = statistics.median(
        timed(lambda: fab("-H", ",".join(clients), "trust-ca")) for _ in range(RUNS)
    )
    return {"clients": len(clients), "one_s": one, "all_s": every, "all_over_one": every / one}


def local_material() -> dict[str, float]:
    out: dict[str, float] = {}
    base = yaml.safe_load(INVENTORY.read_text())
    for key_type in ("ec-p256", "rsa-4096"):
        samples = []
        for _ in range(RUNS):
            with tempfile.TemporaryDirectory() as tmp:
                data = {**base, "pki": {"key_type": key_type}, "state_dir": tmp}
                path = Path(tmp) / "inventory.yaml"
                path.write_text(yaml.safe_dump(data))
                inv = inventory.load(path)
                samples.append(timed(lambda inv=inv: pki.init_pki(inv, PASSPHRASE)))
        out[f"pki_init_{key_type}_s"] = statistics.median(samples)
    for rounds in (10, 12):
        with tempfile.TemporaryDirectory() as tmp:
            data = {**base, "users": {"bcrypt_rounds": rounds}, "state_dir": tmp}
            path = Path(tmp) / "inventory.yaml"
            path.write_text(yaml.safe_dump(data))
            inv = inventory.load(path)
            samples = [
                timed(lambda inv=inv: users.set_password(inv, "bench", "bench-password-1"))
                for _ in range(RUNS)
            ]
        out[f"adduser_local_bcrypt_{rounds}_s"] = statistics.median(samples)
    return out


def main() -> None:
    print("lab: bringing it up", flush=True)
    invoke("lab.up")
    state = inventory.load(INVENTORY).state_path
    if not (state / "pki" / "ca.crt").exists():
        invoke("pki.init")
    if not users.load(inventory.load(INVENTORY)).users():
        invoke("users.add", "--username", "bench", "--password-stdin", stdin="bench-password-1\n")
    results = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "redeploy": redeploy(),
        "fan_out": fan_out(),
        "local": local_material(),
    }
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
