"""Token auth (issue #15), measured as users meet it: a default-cost user (bcrypt cost
12) against a cost-5 login (a robot's), real ``docker`` clients on the lab.

- ``docker push`` of a new 20-layer image (64 KiB layers) from client1, as each;
- 40 API requests (``GET /v2/``) in one token's lifetime, and how many password
  checks they cost (``GET /auth/token`` lines in nginx's log: the only place a
  password is checked);
- the fleet: every Debian client pulling the same new 20-layer image at once, as
  the default-cost user, wall time from start to the last pull done.
"""

from __future__ import annotations

import shlex
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from bench import seconds
from tasks.inventory import Inventory
from tasks.remote.target import Target, open_target

LAYERS = 20


def as_user(user: str) -> str:
    return f"export DOCKER_CONFIG=/root/.docker-{user}; mkdir -p $DOCKER_CONFIG; "


def build_script(ref: str, layers: int = LAYERS) -> str:
    steps = "".join(f"COPY l{i} /l{i}\\n" for i in range(layers))
    return (
        "d=$(mktemp -d) && "
        f"for i in $(seq 0 {layers - 1}); do head -c 65536 /dev/urandom > $d/l$i; done && "
        f"printf 'FROM scratch\\n{steps}' > $d/Dockerfile && "
        f"docker build -q -t {shlex.quote(ref)} $d >/dev/null && rm -rf $d"
    )


def login(t: Target, inv: Inventory, user: str, secret: str) -> None:
    t.feed(
        as_user(user) + f"docker login -u {shlex.quote(user)} --password-stdin "
        f"{shlex.quote(inv.registry.address)} >/dev/null",
        (secret + "\n").encode(),
        f"docker login as {user}",
    )


def password_checks(registry: Target) -> int:
    out = registry.check(
        "docker logs regkit-nginx 2>/dev/null | grep -c 'GET /auth/token' || true",
        "counting password checks",
    ).stdout
    return int(out.strip() or 0)


def push_once(t: Target, inv: Inventory, user: str) -> float:
    ref = f"{inv.registry.address}/bench/layers:{uuid.uuid4().hex[:10]}"
    t.check(build_script(ref), "building a 20-layer image")
    took = seconds(lambda: t.check(as_user(user) + f"docker push -q {ref}", f"push as {user}"))
    t.check(f"docker rmi -f {ref} >/dev/null", "removing the pushed image")
    return took


def api_calls(t: Target, inv: Inventory, user: str, secret: str, count: int = 40) -> float:
    """``count`` GET /v2/ with one token (asked for once, as a client would)."""
    url = inv.registry.url
    ca = f"/etc/docker/certs.d/{inv.registry.address}/ca.crt"
    script = f"""set -e
umask 077
t=$(curl -sS -K - --cacert {ca} '{url}/auth/token?service={inv.registry.domain}' \\
  | sed -n 's/.*"token": *"\\([^"]*\\)".*/\\1/p')
printf 'header = "Authorization: Bearer %s"\\n' "$t" > /tmp/bench-bearer
start=$(date +%s.%N)
for i in $(seq {count}); do
  curl -sS -o /dev/null --fail -K /tmp/bench-bearer --cacert {ca} '{url}/v2/'
done
end=$(date +%s.%N)
rm -f /tmp/bench-bearer
awk -v a="$start" -v b="$end" 'BEGIN {{ print b - a }}'
"""
    login_line = f'user = "{user}:{secret}"\n'.encode()
    return float(t.feed(script, login_line, "40 API calls").strip())


def fleet_pull(inv: Inventory, clients: list[Target], ref: str) -> float:
    def pull(t: Target) -> None:
        t.check(as_user("bench-dev") + f"docker pull -q {ref} >/dev/null", f"pull on {t.alias}")

    for t in clients:
        t.check(f"docker rmi -f {ref} >/dev/null 2>&1; true", "removing the image")
    start = time.perf_counter()
    with ThreadPoolExecutor(len(clients)) as pool:
        list(pool.map(pull, clients))
    return time.perf_counter() - start


def auth(
    inv: Inventory, dev: tuple[str, str], robot: tuple[str, str], runs: int = 3
) -> dict[str, float]:
    """Push as ``dev`` (default cost) and ``robot`` (cost 5), alternating ``runs`` times;
    40 API calls as ``dev``; the fleet pull. Medians."""
    registry = open_target(inv, inv.with_role("registry")[0])
    clients = [open_target(inv, alias) for alias in inv.with_role("client") if alias != "b2d"]
    c1 = clients[0]
    for t in clients:
        login(t, inv, *dev)
    login(c1, inv, *robot)
    pushes: dict[str, list[float]] = {"dev": [], "robot": []}
    for _ in range(runs):
        pushes["dev"].append(push_once(c1, inv, dev[0]))
        pushes["robot"].append(push_once(c1, inv, robot[0]))
    before = password_checks(registry)
    calls = statistics.median(api_calls(c1, inv, *dev) for _ in range(runs))
    checks_per_40 = (password_checks(registry) - before) / runs
    ref = f"{inv.registry.address}/bench/fleet:{uuid.uuid4().hex[:10]}"
    c1.check(build_script(ref), "building the fleet's image")
    c1.check(as_user(dev[0]) + f"docker push -q {ref} >/dev/null", "pushing the fleet's image")
    before = password_checks(registry)
    fleet = [fleet_pull(inv, clients, ref) for _ in range(runs)]
    fleet_checks = (password_checks(registry) - before) / runs
    dev_push, robot_push = statistics.median(pushes["dev"]), statistics.median(pushes["robot"])
    return {
        "push_20_layers_default_cost_s": dev_push,
        "push_20_layers_cost5_s": robot_push,
        "push_default_over_cost5": dev_push / robot_push,
        "api_40_requests_one_token_s": calls,
        "password_checks_per_40_requests": checks_per_40,
        "fleet_clients": len(clients),
        "fleet_pull_20_layers_s": statistics.median(fleet),
        "fleet_password_checks_per_pull_round": fleet_checks,
    }
