"""The mirror (issue #20): a Docker Hub image through the mirror, cold and warm, against
pulling it from the upstream directly.

The lab's hub plays Docker Hub. Each round pushes a new image to hub (one layer of
100 MiB of random data), so the mirror has never seen it, then times three pulls of
it, each with ``docker pull`` on a client of its own:

- **direct**: client3 pulls it from hub itself (hub's CA in its certs.d), as a host
  without the mirror pulls from Docker Hub;
- **cold**: client1 pulls it through the mirror, which fetches it from hub as it
  passes it on;
- **warm**: client2 pulls it through the mirror again: from the cache.

Clients reach regbox's mirror (their registry name pinned to regbox). Every host of
the lab shares this machine's cores and its one network bridge, so hub is as near as
the registry host: the figures show what the mirror costs on top of a pull, and
what a warm cache saves where the upstream is this close; across the internet the
saving is the upstream's latency and bandwidth, and its rate limits.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

from bench.scaleout import pin, pull, timed, unpin
from lab import hub
from lab.engine import Engine
from lab.hosts import host_spec
from lab.settings import INVENTORY, Settings
from lab.store import lab_ip
from tasks import inventory
from tasks.remote.target import open_target

ROOT = Path(__file__).resolve().parent.parent
MIB = 100


def run(argv: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def mirror_bench(env: dict[str, str], clients: int, rounds: int = 3) -> dict[str, float]:
    """Medians of the direct, cold and warm pulls; the lab keeps hub and the mirror."""
    fab = [str(Path(sys.executable).parent / "fab")]
    run([sys.executable, "-m", "invoke", "lab.up", "--hub", "--clients", str(clients)], env)
    run([*fab, "-H", "regbox", "deploy"], env)
    run([*fab, "-H", "client1,client2", "trust-ca", "--mirror"], env)
    inv = inventory.load(INVENTORY)
    engine = Engine(Settings())
    hub_ip = lab_ip(engine, hub.CONTAINER)
    c1, c2, c3 = (open_target(inv, f"client{n}") for n in (1, 2, 3))
    regbox = lab_ip(engine, host_spec("regbox").container)
    hub_certs = f"/etc/docker/certs.d/{hub_ip}"
    c3.feed(f"mkdir -p {hub_certs} && cat > {hub_certs}/ca.crt", hub.HUB_CA.read_bytes(), "CA")
    figures: dict[str, list[float]] = {"direct": [], "cold": [], "warm": []}
    try:
        for target in (c1, c2):
            pin(target, inv.registry.domain, regbox)
        for _ in range(rounds):
            name = f"bench{uuid.uuid4().hex[:8]}"
            payload = random.Random(name).randbytes(MIB * 1024 * 1024)  # noqa: S311 - test data
            hub.push(engine, name, payload)
            figures["direct"].append(timed(c3, pull(f"{hub_ip}/library/{name}:lab"), "pull"))
            figures["cold"].append(timed(c1, pull(f"{name}:lab"), "pull"))
            figures["warm"].append(timed(c2, pull(f"{name}:lab"), "pull"))
    finally:
        for target in (c1, c2):
            unpin(target, inv.registry.domain)
        c3.check(f"rm -rf {hub_certs}", "removing hub's CA")
    return {f"mirror_{kind}_pull_s": statistics.median(times) for kind, times in figures.items()}
