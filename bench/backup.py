"""Backups (issue #17): ``fab backup`` against a plain ``tar | ssh`` of the same data.

client1 pushes one image of ``SIZE_MIB`` random MiB (untimed). Then, alternating,
a first (full) ``fab -H regbox backup`` into a new folder, and OpenSSH's client
running ``sudo tar -cf - docker`` in the registry's data folder on regbox, written
to a file here. Both cross the lab's SSH and write to this machine's disk;
``fab backup`` also checks every blob's sha256 and fsyncs it. A second backup
with nothing new shows what an incremental run costs.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab.settings import INVENTORY, SSH_KEY
from tasks import inventory
from tasks.remote.target import open_target

ROOT = Path(__file__).resolve().parent.parent
SIZE_MIB = 1024


def timed_run(argv: list[str], env: dict[str, str], out: Path | None = None) -> float:
    start = time.perf_counter()
    with open(out or "/dev/null", "wb") as sink:
        proc = subprocess.run(argv, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed: {proc.stderr.decode(errors='replace')}")
    return time.perf_counter() - start


def backup_bench(env: dict[str, str], runs: int = 3) -> dict[str, float]:
    inv = inventory.load(INVENTORY)
    c1 = open_target(inv, "client1")
    ref = f"{inv.registry.address}/bench/backup:big"
    c1.check(
        f"d=$(mktemp -d) && head -c {SIZE_MIB}M /dev/urandom > $d/blob && "
        "printf 'FROM scratch\\nCOPY blob /blob\\n' > $d/Dockerfile && "
        f"docker build -q -t {ref} $d >/dev/null && docker push -q {ref} >/dev/null && rm -rf $d",
        f"pushing a {SIZE_MIB} MiB image",
    )
    host = inv.host("regbox")
    plain = [
        "ssh", "-i", str(SSH_KEY), "-p", str(host.port), "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        f"{host.user}@{host.hostname}",
        f"sudo tar -C {inv.registry.data_dir} -cf - docker",
    ]  # fmt: skip
    fab = [str(Path(sys.executable).parent / "fab"), "-H", "regbox", "backup", "--to"]
    ours, theirs, again, total = [], [], [], 0
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            ours.append(timed_run([*fab, tmp], env))
            again.append(timed_run([*fab, tmp], env))
            record = next(Path(tmp, "snapshots").glob("*/snapshot.json"))
            total = json.loads(record.read_text())["bytes_total"]
            theirs.append(timed_run(plain, env, Path(tmp) / "plain.tar"))
    mb = total / 1e6
    first, tar = statistics.median(ours), statistics.median(theirs)
    return {
        "data_mb": mb,
        "backup_first_s": first,
        "backup_first_mb_s": mb / first,
        "tar_ssh_s": tar,
        "tar_ssh_mb_s": mb / tar,
        "backup_over_tar_ssh": tar / first,
        "backup_again_nothing_new_s": statistics.median(again),
    }
