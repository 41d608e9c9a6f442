"""Retention (issue #16): how long ``fab prune`` takes to read and plan a registry of
500 tags in 20 repositories, as a user runs it.

Setup (not timed): client1 pushes 25 images into each of 20 repositories through
the registry's API, one a day apart (``lab/push-image.sh``: one 64 KiB layer and a
config with its creation date each). The rule keeps the 10 newest of each.

Timed:
- ``fab -H regbox prune --dry-run``, the whole command (SSH, tunnel, token, every
  tag's manifest and config, the plan, the table), median of a few runs;
- the same two parts in process: reading every tag through the API, and the plan
  itself (pure);
- ``fab -H regbox prune --yes`` once: the 300 deletions, then the read-only gc.
"""

from __future__ import annotations

import datetime as dt
import statistics
import subprocess
import sys
import time
from pathlib import Path
from shlex import quote

import yaml

from bench import seconds
from lab.settings import PUSH_IMAGE
from tasks import catalog, inventory, prune, users
from tasks.inventory import ENV_VAR, Inventory
from tasks.plans import prune as planner
from tasks.remote.target import Target, open_target

ROOT = Path(__file__).resolve().parent.parent
REPOSITORIES = 20
TAGS = 25
KEEP = 10
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
PUSHER = "/tmp/regkit-push-image.sh"  # noqa: S108 - a lab client's scratch file


def push_all(c1: Target, inv: Inventory) -> None:
    """``TAGS`` images a day apart in each of ``REPOSITORIES`` repositories (untimed)."""
    reg = inv.registry
    ca = f"/etc/docker/certs.d/{reg.address}/ca.crt"
    c1.feed(f"cat > {PUSHER}", PUSH_IMAGE.read_bytes(), "copying the push script")
    login = f'user = "{users.PROBE_USER}:{users.probe_credential(inv)[0]}"\n'.encode()
    for r in range(REPOSITORIES):
        repo = f"bench/prune/{r:02}"
        script = f"""set -e
umask 077
curl -sSf -K - --cacert {ca} \\
  '{reg.url}/auth/token?service={reg.domain}&scope=repository:{repo}:pull,push' \\
  | sed -n 's/.*"token": *"\\([^"]*\\)".*/header = "Authorization: Bearer \\1"/p' \\
  > /tmp/bench-bearer
export REPO={quote(repo)} CA={quote(ca)} URL={quote(reg.url)} MT={quote(MANIFEST)}
now=$(date +%s)
for n in $(seq 0 {TAGS - 1}); do
  CREATED=$(date -u -d "@$((now - n * 86400))" +%Y-%m-%dT%H:%M:%SZ) TAGS="b$n" \\
    sh {PUSHER} < /tmp/bench-bearer > /dev/null
done
rm -f /tmp/bench-bearer
"""
        c1.feed(script, login, f"pushing {TAGS} images to {repo}")
        print(f"bench: prune: pushed {(r + 1) * TAGS} of {REPOSITORIES * TAGS} tags", flush=True)


def fab(env: dict[str, str], *args: str) -> str:
    """``fab -H regbox prune ARGS`` as a user runs it; exit on failure."""
    argv = [str(Path(sys.executable).parent / "fab"), "-H", "regbox", "prune", *args]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def prune_bench(inv_path: Path, env: dict[str, str], runs: int = 3) -> dict[str, float]:
    """The figures above (medians of ``runs``), with the rule in an inventory beside
    the lab's (so its relative paths hold)."""
    data = yaml.safe_load(inv_path.read_text())
    data["retention"] = [{"repositories": ["bench/prune/*"], "keep_last": KEEP}]
    path = inv_path.with_name("inventory-bench-prune.yaml")
    path.write_text(yaml.safe_dump(data))
    env = {**env, ENV_VAR: str(path)}
    inv = inventory.load(path)
    push_all(open_target(inv, "client1"), inv)
    dry = statistics.median(seconds(lambda: fab(env, "--dry-run")) for _ in range(runs))
    reads, plans, tags, deletions = [], [], 0, 0
    regbox = open_target(inv, "regbox")
    for _ in range(runs):
        with catalog.api_session(inv, regbox) as api:
            start = time.perf_counter()
            images = prune.images(api)
            reads.append(time.perf_counter() - start)
        now = dt.datetime.now(dt.UTC)
        start = time.perf_counter()
        plan = planner.plan(inv.retention, images, now)
        plans.append(time.perf_counter() - start)
        tags, deletions = len(images), len(plan.deletions)
    apply = seconds(lambda: fab(env, "--yes"))
    read = statistics.median(reads)
    return {
        "repositories_with_rule": REPOSITORIES,
        "tags_read": tags,
        "planned_deletions": deletions,
        "dry_run_s": dry,
        "read_all_tags_s": read,
        "tags_read_per_s": tags / read,
        "plan_ms": statistics.median(plans) * 1000,
        "prune_yes_s": apply,
    }
