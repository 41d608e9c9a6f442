"""Benchmarks on the lab (issue #10): the no-op redeploy, the fan-out, the data
path through the proxy, local material; token auth (#15), prune (#16), backups (#17),
replicas on S3 (#19), the mirror (#20) and a wrong-password flood (#22).

Run with ``make bench`` (``python -m bench.run`` from the repository root). It
brings the lab up with six Debian clients (plus b2d), runs each measurement a
few times, prints the medians and ratios against the bars and writes them to
``bench/results.json``. Speed is measured here, never asserted in tests.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from bench import seconds
from bench.auth import auth
from bench.backup import backup_bench
from bench.datapath import data_path
from bench.flood import flood_bench
from bench.mirror import mirror_bench
from bench.prune import prune_bench
from bench.scaleout import scale_out
from lab.engine import Engine
from lab.hosts import host_spec
from lab.settings import INVENTORY, Settings
from tasks import inventory, pki, pki_secrets, render, users

ROOT = Path(__file__).resolve().parent.parent
PASSPHRASE = "bench-passphrase"  # noqa: S105 - the lab's throwaway CA
ENV = {**os.environ, "REGISTRY_INVENTORY": str(INVENTORY), pki_secrets.PASSPHRASE_ENV: PASSPHRASE}
RUNS = 5
CLIENTS = 8  # Debian clients in the lab (fan-out, fleet pull), b2d comes on top
# Token auth: a user at the inventory's default cost, and a robot (cost 5).
DEV = ("bench-dev", "bench-dev-password-1")
DONE = re.compile(r"done in ([0-9.]+) s, (\d+) SSH commands")


def run(*argv: str, stdin: str = "") -> str:
    proc = subprocess.run(
        argv, cwd=ROOT, env=ENV, input=stdin, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def fab(*args: str, stdin: str = "") -> str:
    return run(str(Path(sys.executable).parent / "fab"), *args, stdin=stdin)


def invoke(*args: str, stdin: str = "") -> str:
    return run(sys.executable, "-m", "invoke", *args, stdin=stdin)


def deploy_once() -> tuple[float, int]:
    """Wall time of ``fab -H regbox deploy`` and the SSH commands it reports."""
    start = time.perf_counter()
    out = fab("-H", "regbox", "deploy")
    wall = time.perf_counter() - start
    match = DONE.search(out)
    if not match:
        sys.exit(f"fab deploy printed no 'done in ... SSH commands' line:\n{out}")
    return wall, int(match.group(2))


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
    """trust-ca on one client against all of them: with nothing to change, and with
    the CA to install and Docker to restart on each (untrust-ca before each run)."""
    clients = inventory.load(INVENTORY).with_role("client")
    out: dict[str, float] = {"clients": len(clients)}
    for name, hosts in (("one", clients[:1]), ("all", clients)):
        target = ",".join(hosts)
        fab("-H", target, "trust-ca")
        out[f"noop_{name}_s"] = statistics.median(
            seconds(lambda t=target: fab("-H", t, "trust-ca")) for _ in range(RUNS)
        )
        samples = []
        for _ in range(3):
            fab("-H", target, "untrust-ca")
            samples.append(seconds(lambda t=target: fab("-H", t, "trust-ca")))
        out[f"change_{name}_s"] = statistics.median(samples)
    out["noop_all_over_one"] = out["noop_all_s"] / out["noop_one_s"]
    out["change_all_over_one"] = out["change_all_s"] / out["change_one_s"]
    # The floor without regkit or SSH: Docker restarted on the same hosts at once.
    for name, hosts in (("one", clients[:1]), ("all", clients)):
        out[f"bare_restart_{name}_s"] = statistics.median(
            seconds(lambda h=hosts: restart_docker(h)) for _ in range(3)
        )
    out["bare_restart_all_over_one"] = out["bare_restart_all_s"] / out["bare_restart_one_s"]
    return out


def restart_docker(aliases: list[str]) -> None:
    """Restart dockerd on ``aliases`` at once (docker exec, no SSH), until each answers."""
    engine = Engine(Settings())
    script = (
        "{ service docker restart || /etc/init.d/docker restart; } >/dev/null 2>&1\n"
        "until docker info >/dev/null 2>&1; do sleep 0.1; done"
    )
    with ThreadPoolExecutor(len(aliases)) as pool:
        list(pool.map(lambda a: engine.exec(host_spec(a).container, script), aliases))


def local_material() -> dict[str, float]:
    out: dict[str, float] = {}
    base = yaml.safe_load(INVENTORY.read_text())
    for key_type in ("ec-p256", "rsa-4096"):
        samples, renders = [], []
        for _ in range(RUNS):
            with tempfile.TemporaryDirectory() as tmp:
                data = {**base, "pki": {"key_type": key_type}, "state_dir": tmp}
                path = Path(tmp) / "inventory.yaml"
                path.write_text(yaml.safe_dump(data))
                inv = inventory.load(path)
                samples.append(seconds(lambda inv=inv: pki.init_pki(inv, PASSPHRASE)))
                renders.append(seconds(lambda inv=inv: render.render_all(inv)))
        out[f"pki_init_{key_type}_s"] = statistics.median(samples)
        out[f"render_{key_type}_s"] = statistics.median(renders)
    for rounds in (10, 12):
        with tempfile.TemporaryDirectory() as tmp:
            data = {**base, "users": {"bcrypt_rounds": rounds}, "state_dir": tmp}
            path = Path(tmp) / "inventory.yaml"
            path.write_text(yaml.safe_dump(data))
            inv = inventory.load(path)
            samples = [
                seconds(lambda inv=inv: users.set_password(inv, "bench", "bench-password-1"))
                for _ in range(RUNS)
            ]
        out[f"adduser_local_bcrypt_{rounds}_s"] = statistics.median(samples)
    return out


BARS = (
    ("redeploy", "noop_over_first", "no-op / first deploy", "<=", 0.10),
    ("redeploy", "noop_deploy_s", "no-op deploy, s", "<=", 2.0),
    ("redeploy", "noop_deploy_ssh_commands", "no-op deploy, SSH commands", "<=", 8),
    ("fan_out", "noop_all_over_one", "trust-ca all / one, nothing to change", "<=", 1.5),
    ("fan_out", "change_all_over_one", "trust-ca all / one, installing", "<=", 1.5),
    ("data_path", "push_proxy_vs_native_tls", "push, proxy / native TLS", ">=", 1.0),
    ("data_path", "pull_proxy_vs_native_tls", "pull, proxy / native TLS", ">=", 1.0),
    ("data_path", "pull_proxy_vs_plain", "pull, proxy / plain HTTP", ">=", 0.45),
    ("data_path", "nginx_peak_largest_over_smallest", "nginx memory, 1 GiB / 256 MiB", "<=", 1.1),
    ("data_path", "nginx_temp_files", "nginx temp files", "<=", 0),
    ("auth", "push_default_over_cost5", "push 20 layers, default cost / cost 5", "<=", 1.5),
    ("auth", "password_checks_per_40_requests", "password checks per 40 API calls", "<=", 2),
    ("login_flood", "pull_flooded_over_quiet", "docker pull, flooded / quiet", "<=", 2.0),
    ("login_flood", "ping_flooded_max_ms", "/_ping during the flood, max ms", "<=", 100),
)


def auth_accounts() -> dict[str, Any]:
    """The default-cost user and a push robot, made with the real tasks, then measured."""
    fab("-H", "regbox", "deploy")
    fab("-H", ",".join(inventory.load(INVENTORY).with_role("client")), "trust-ca")
    fab("adduser", "--username", DEV[0], "--password-stdin", stdin=DEV[1] + "\n")
    out = fab("adduser", "--robot", "bench-robot", "--role", "push", "--repos", "bench/*")
    token = next(line for line in out.splitlines() if "token (shown once" in line).split()[-1]
    return auth(inventory.load(INVENTORY), DEV, ("bench-robot", token))


def login_flood() -> dict[str, Any]:
    """A wrong-password flood from client1 while client2 pulls and pings (#22)."""
    fab("-H", "regbox", "deploy")
    fab("-H", "client1,client2", "trust-ca")
    fab("adduser", "--username", DEV[0], "--password-stdin", stdin=DEV[1] + "\n")
    return flood_bench(inventory.load(INVENTORY), DEV)


def retention() -> dict[str, Any]:
    """fab prune over 500 tags in 20 repositories, on the deployed registry."""
    fab("-H", "regbox", "deploy")
    fab("-H", "client1", "trust-ca")
    return prune_bench(INVENTORY, ENV)


def backups() -> dict[str, Any]:
    """fab backup of a 1 GiB image against tar | ssh, on the deployed registry."""
    fab("-H", "regbox", "deploy")
    fab("-H", "client1", "trust-ca")
    return backup_bench(ENV)


def verdicts(results: dict[str, dict[str, object]]) -> list[str]:
    lines = []
    for section, key, label, op, bar in BARS:
        if section not in results:
            continue
        values = results[section]["ratios"] if section == "data_path" else results[section]
        value = float(values[key])  # type: ignore[index]
        met = value <= bar if op == "<=" else value >= bar
        lines.append(f"{label}: {value:.3f} (bar {op} {bar}): {'met' if met else 'MISSED'}")
    return lines


def main() -> None:
    print(f"lab: bringing it up with {CLIENTS} Debian clients and b2d", flush=True)
    invoke("lab.up", "--clients", str(CLIENTS))
    inv = inventory.load(INVENTORY)
    if not (inv.state_path / "pki" / "ca.crt").exists():
        invoke("pki.init")
    if not users.load(inv).users():
        invoke("users.add", "--username", "bench", "--password-stdin", stdin="bench-password-1\n")
    machine = {
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "python": platform.python_version(),
    }
    measures: dict[str, Callable[[], dict[str, Any]]] = {
        "redeploy": redeploy,
        "fan_out": fan_out,
        "data_path": lambda: data_path(inventory.load(INVENTORY)),
        "local": local_material,
        "auth": auth_accounts,
        "prune": retention,
        "backup": backups,
        "scale_out": lambda: scale_out(ENV, CLIENTS),
        "mirror": lambda: mirror_bench(ENV, CLIENTS),
        "login_flood": login_flood,
    }
    # `python -m bench.run auth data_path` runs those only, and keeps the other results.
    chosen = sys.argv[1:] or list(measures)
    path = ROOT / "bench" / "results.json"
    results: dict[str, dict[str, object]] = json.loads(path.read_text()) if sys.argv[1:] else {}
    results["machine"] = machine
    for name in chosen:
        print(f"bench: {name}", flush=True)
        results[name] = measures[name]()
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print("\n".join(verdicts(results)))


if __name__ == "__main__":
    main()
