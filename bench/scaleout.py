"""Replicas on S3 (issue #19): the bucket against the disk, one replica against two.

- **Storage.** A new image of one 1 GiB layer of random data: ``docker push`` from
  client1, then ``docker pull`` on client2 (the image removed there first), through
  regbox's proxy, with regbox on its disk (the lab inventory) and on the lab's
  bucket (the same inventory with ``registry.storage`` set, as a user sets it).
  Rounds alternate the two, a redeploy between; medians.
- **Replicas.** Eight clients pull the same new 200 MiB image at once: all through
  regbox (one replica), then four through regbox and four through regbox2 (two
  replicas, as DNS round robin or a load balancer spreads clients). Each client
  names its replica in /etc/hosts. Wall time until the last pull is done; rounds
  alternate; medians.

Every host of the lab shares this machine's cores: two replicas here share the
CPU that one had, so the replica figure shows what a second host costs and
whether the shared bucket holds up, not how far two machines would scale.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab.engine import Engine
from lab.hosts import host_spec
from lab.settings import S3_INVENTORY, Settings
from lab.store import lab_ip
from tasks import inventory
from tasks.inventory import ENV_VAR
from tasks.remote.target import Target, open_target

ROOT = Path(__file__).resolve().parent.parent
REPLICAS = ("regbox", "regbox2")
USER = ("bench-scale", "bench-scale-password-1")


def run(argv: list[str], env: dict[str, str], stdin: str = "") -> str:
    proc = subprocess.run(
        argv, cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def s3_env(env: dict[str, str]) -> dict[str, str]:
    """The lab inventory with the registry on the bucket (``invoke lab.s3-inventory``)."""
    root = f"/bench-{uuid.uuid4().hex[:8]}"
    run([sys.executable, "-m", "invoke", "lab.s3-inventory", "--root", root], env)
    return {**env, ENV_VAR: str(S3_INVENTORY)}


def pin(client: Target, domain: str, ip: str) -> None:
    """``domain`` is ``ip`` on ``client`` (a line in /etc/hosts, replaced each time)."""
    client.check(
        f"grep -v ' {domain}$' /etc/hosts > /tmp/hosts.bench; "
        f"echo '{ip} {domain}' >> /tmp/hosts.bench && cat /tmp/hosts.bench > /etc/hosts",
        f"pinning {domain}",
    )


def unpin(client: Target, domain: str) -> None:
    client.check(
        f"grep -v ' {domain}$' /etc/hosts > /tmp/hosts.bench; cat /tmp/hosts.bench > /etc/hosts",
        f"unpinning {domain}",
    )


def timed(target: Target, script: str, what: str) -> float:
    start = time.perf_counter()
    target.check(script, what)
    return time.perf_counter() - start


def new_image(client: Target, ref: str, mib: int) -> str:
    """Build an image of one ``mib`` MiB layer of random data on ``client`` (untimed)."""
    client.check(
        f"d=$(mktemp -d) && head -c {mib}M /dev/urandom > $d/blob && "
        "printf 'FROM scratch\\nCOPY blob /blob\\n' > $d/Dockerfile && "
        f"docker build -q -t {ref} $d >/dev/null && rm -rf $d",
        f"building a {mib} MiB image",
    )
    return ref


def pull(ref: str) -> str:
    return f"docker rmi -f {ref} >/dev/null 2>&1; docker pull -q {ref} >/dev/null"


def storage_round(env: dict[str, str], fab: list[str], mib: int) -> tuple[float, float]:
    """Deploy regbox with ``env``'s inventory; a new image's push and pull times."""
    run([*fab, "-H", "regbox", "deploy"], env)
    inv = inventory.load(Path(env[ENV_VAR]))
    c1, c2 = open_target(inv, "client1"), open_target(inv, "client2")
    ref = new_image(c1, f"{inv.registry.address}/bench/storage:{uuid.uuid4().hex[:8]}", mib)
    pushed = timed(c1, f"docker push -q {ref} >/dev/null && docker rmi {ref} >/dev/null", "push")
    return pushed, timed(c2, pull(ref), "pull")


def fleet_pull(clients: list[Target], ref: str) -> float:
    """Wall time of every client pulling ``ref`` at once."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        list(pool.map(lambda c: c.check(pull(ref), "pull"), clients))
    return time.perf_counter() - start


def scale_out(env: dict[str, str], clients: int, rounds: int = 3) -> dict[str, float]:
    """The storage rounds, then the replica rounds, on the scale-out lab with ``clients``
    Debian clients; the lab ends with regbox on its disk and regbox2 undeployed."""
    fab = [str(Path(sys.executable).parent / "fab")]
    run([sys.executable, "-m", "invoke", "lab.up", "--scale-out", "--clients", str(clients)], env)
    on_s3 = s3_env(env)
    names = [f"client{n}" for n in range(1, clients + 1)]
    run([*fab, "-H", "regbox", "deploy"], env)
    run([*fab, "adduser", "--username", USER[0], "--password-stdin"], env, USER[1] + "\n")
    login = ["trust-ca", "--login", USER[0], "--password-stdin"]
    run([*fab, "-H", ",".join(names), *login], env, USER[1] + "\n")
    disk: dict[str, list[float]] = {"push": [], "pull": []}
    bucket: dict[str, list[float]] = {"push": [], "pull": []}
    for _ in range(2):
        for which, figures in ((env, disk), (on_s3, bucket)):
            pushed, pulled = storage_round(which, fab, 1024)
            figures["push"].append(pushed)
            figures["pull"].append(pulled)
    run([*fab, "deploy"], on_s3)
    inv = inventory.load(S3_INVENTORY)
    domain = inv.registry.domain
    targets = [open_target(inv, name) for name in names]
    engine = Engine(Settings())
    ips = {alias: lab_ip(engine, host_spec(alias).container) for alias in REPLICAS}
    one, two = [], []
    try:
        for _ in range(rounds):
            ref = f"{inv.registry.address}/bench/fleet:{uuid.uuid4().hex[:8]}"
            new_image(targets[0], ref, 200)
            targets[0].check(f"docker push -q {ref} >/dev/null", "push")
            for target in targets:
                pin(target, domain, ips["regbox"])
            one.append(fleet_pull(targets, ref))
            for n, target in enumerate(targets):
                pin(target, domain, ips[REPLICAS[n % 2]])
            two.append(fleet_pull(targets, ref))
    finally:
        for target in targets:
            unpin(target, domain)
        run([*fab, "-H", "regbox2", "undeploy"], on_s3)
        run([*fab, "-H", "regbox", "deploy"], env)
        S3_INVENTORY.unlink()
    push = {name: statistics.median(f["push"]) for name, f in (("disk", disk), ("s3", bucket))}
    pulls = {name: statistics.median(f["pull"]) for name, f in (("disk", disk), ("s3", bucket))}
    mb = 1024**3 / 1e6
    return {
        **{f"push_1gib_{name}_s": value for name, value in push.items()},
        **{f"pull_1gib_{name}_s": value for name, value in pulls.items()},
        **{f"push_{name}_mb_s": mb / value for name, value in push.items()},
        **{f"pull_{name}_mb_s": mb / value for name, value in pulls.items()},
        "s3_over_disk_push_time": push["s3"] / push["disk"],
        "s3_over_disk_pull_time": pulls["s3"] / pulls["disk"],
        "fleet_pull_200mib_one_replica_s": statistics.median(one),
        "fleet_pull_200mib_two_replicas_s": statistics.median(two),
        "two_over_one_replica_time": statistics.median(two) / statistics.median(one),
        "fleet_clients": float(clients),
    }
