"""The data path (issue #10): one blob through the nginx proxy, against two references.

Everything runs on the registry host, over loopback, so the network is out of the
picture and only the servers differ:

- **proxy**: https://<domain>:443, the deployed nginx in front of the registry,
  with a login;
- **native TLS**: a second registry container with distribution's own
  ``http.tls`` and the same certificate, on port 5443 (what a user would run
  instead of a proxy);
- **plain**: a third registry container, plain HTTP on 127.0.0.1:5001 (the ceiling).

Each run uploads one blob of random data with the registry API's monolithic
upload (POST, then one PUT ``?digest=``) and downloads it with a GET, using curl.
While the proxy moves data, nginx's memory (the sum of its processes' RSS) and
its temp folders are sampled every 100 ms.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from shlex import quote

from tasks.inventory import Inventory
from tasks.layout import REMOTE_DIR
from tasks.remote.target import Target, open_target

BENCH_DATA = "/var/lib/regkit-bench"
WORK = f"{BENCH_DATA}/work"


@dataclass
class Route:
    name: str
    base: str  # the registry's URL as curl reaches it
    curl: str  # extra curl options: CA, name resolution, login


def routes(inv: Inventory) -> list[Route]:
    domain = inv.registry.domain
    ca = f"--cacert {REMOTE_DIR}/ca.crt"
    return [
        Route(
            "proxy",
            f"https://{domain}",
            f"{ca} --resolve {domain}:443:127.0.0.1 -K {WORK}/login",
        ),
        Route("native-tls", f"https://{domain}:5443", f"{ca} --resolve {domain}:5443:127.0.0.1"),
        Route("plain", "http://127.0.0.1:5001", ""),
    ]


def setup_script(inv: Inventory) -> str:
    """Start the two reference registries (same image as the deploy's) and a login file."""
    image = quote(inv.registry.images.registry)
    return f"""set -e
mkdir -p {WORK} {BENCH_DATA}/tls {BENCH_DATA}/plain
chmod 700 {WORK}
printf 'user = "regkit-probe:%s"\\n' "$(cat {REMOTE_DIR}/probe-password)" > {WORK}/basic
chmod 600 {WORK}/basic
docker rm -f regkit-bench-tls regkit-bench-plain >/dev/null 2>&1 || true
docker run -d --name regkit-bench-plain -p 127.0.0.1:5001:5000 \\
  -v {BENCH_DATA}/plain:/var/lib/registry {image} >/dev/null
docker run -d --name regkit-bench-tls -p 5443:5000 \\
  -v {BENCH_DATA}/tls:/var/lib/registry -v {REMOTE_DIR}/tls:/certs:ro \\
  -e REGISTRY_HTTP_TLS_CERTIFICATE=/certs/server.crt \\
  -e REGISTRY_HTTP_TLS_KEY=/certs/server.key {image} >/dev/null
for i in $(seq 50); do
  curl -s -o /dev/null http://127.0.0.1:5001/v2/ && \\
  curl -s -o /dev/null --cacert {REMOTE_DIR}/ca.crt \\
    --resolve {inv.registry.domain}:5443:127.0.0.1 https://{inv.registry.domain}:5443/v2/ && exit 0
  sleep 0.2
done
echo 'the reference registries did not answer within 10 s' >&2; exit 1"""


def blob_script(mib: int) -> str:
    """Make (once) a blob of ``mib`` MiB of random data; print its digest."""
    f = f"{WORK}/blob-{mib}"
    return f"""set -e
[ -f {f}.sha256 ] || {{
  head -c {mib}M /dev/urandom > {f}; sha256sum < {f} | cut -c1-64 > {f}.sha256
}}
cat {f}.sha256"""


def transfer_script(p: Route, mib: int, digest: str, watch: bool) -> str:
    """One monolithic upload and one download; print 'put SECONDS' and 'get SECONDS'.

    With ``watch``, also 'peak_rss_kib N' and 'spooled N' (nginx temp files seen).
    """
    f = f"{WORK}/blob-{mib}"
    repo = "bench/blob"
    curl = f"curl -sS {p.curl}"
    watcher = (
        f"""rm -f {WORK}/stop {WORK}/mem {WORK}/spool
trap 'touch {WORK}/stop' EXIT
nginx=$(docker inspect --format '{{{{.State.Pid}}}}' regkit-nginx)
( while [ ! -f {WORK}/stop ]; do
    ps -C nginx -o rss= | awk '{{s+=$1}} END {{print s}}' >> {WORK}/mem
    find /proc/$nginx/root/var/lib/nginx -type f 2>/dev/null | wc -l >> {WORK}/spool
    sleep 0.1
  done ) >/dev/null 2>&1 &
"""
        if watch
        else ""
    )
    report = (
        f"""touch {WORK}/stop; wait
echo "peak_rss_kib $(sort -n {WORK}/mem | tail -1)"
echo "spooled $(sort -n {WORK}/spool | tail -1)"
"""
        if watch
        else ""
    )
    # Through the proxy, the login buys a token first (token auth), as a client does.
    basic = p.curl.replace(f"-K {WORK}/login", f"-K {WORK}/basic")
    query = f"service={p.base.removeprefix('https://')}&scope=repository:{repo}:pull,push"
    token = (
        f"""t=$(curl -sS {basic} '{p.base}/auth/token?{query}' \\
  | sed -n 's/.*"token": *"\\([^"]*\\)".*/\\1/p')
(umask 077; printf 'header = "Authorization: Bearer %s"\\n' "$t" > {WORK}/login)
"""
        if p.name == "proxy"
        else ""
    )
    return f"""set -e
{token}{watcher}loc=$({curl} -X POST -D - -o /dev/null {p.base}/v2/{repo}/blobs/uploads/ \\
  | tr -d '\\r' | sed -n 's/^location: *//Ip')
case "$loc" in http*) ;; *) loc="{p.base}$loc";; esac
case "$loc" in *\\?*) sep='&';; *) sep='?';; esac
put=$({curl} -X PUT -T {f} -H 'Expect:' -H 'Content-Type: application/octet-stream' \\
  -o /dev/null -w '%{{http_code}} %{{time_total}}' "$loc${{sep}}digest=sha256:{digest}")
get=$({curl} -o /dev/null -w '%{{http_code}} %{{time_total}}' \\
  {p.base}/v2/{repo}/blobs/sha256:{digest})
{report}echo "put $put"
echo "get $get"
"""


def parse(output: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in output.splitlines() if line.strip()}


def transfer(t: Target, p: Route, mib: int, digest: str) -> dict[str, float]:
    """One upload and one download along ``p``: MB/s, and nginx's memory for the proxy."""
    out = parse(t.check(transfer_script(p, mib, digest, p.name == "proxy"), p.name).stdout)
    result = {}
    for key, name, ok in (("put", "push_mb_s", "201"), ("get", "pull_mb_s", "200")):
        code, seconds = out[key]
        if code != ok:
            raise RuntimeError(f"{p.name}: {key} answered {code}, not {ok}")
        result[name] = mib * 1024 * 1024 / float(seconds) / 1e6
    if p.name == "proxy":
        result["nginx_peak_rss_mib"] = int(out["peak_rss_kib"][0]) / 1024
        result["nginx_temp_files"] = int(out["spooled"][0])
    return result


def data_path(
    inv: Inventory, sizes: tuple[int, ...] = (256, 1024), runs: int = 5
) -> dict[str, dict[str, float]]:
    """The proxy at each size, the references at the largest, ``runs`` rounds each.

    A round moves the blob once along every route, one after the other, so that
    a slow moment of the machine touches all routes alike; each ratio is the
    median of the rounds' ratios. Memory and temp files are the worst seen.
    """
    t = open_target(inv, inv.with_role("registry")[0])
    t.check(setup_script(inv), "starting the reference registries")
    big = max(sizes)
    rounds: dict[str, list[dict[str, float]]] = {}
    try:
        for mib in sizes:
            digest = t.check(blob_script(mib), f"making a {mib} MiB blob").stdout.strip()
            todo = [p for p in routes(inv) if p.name == "proxy" or mib == big]
            print(
                f"data path: {mib} MiB blob x {runs} along {', '.join(p.name for p in todo)}",
                flush=True,
            )
            for _ in range(runs):
                for p in todo:
                    rounds.setdefault(f"{p.name}_{mib}mib", []).append(transfer(t, p, mib, digest))
        docker = docker_path(inv, t, big_mib=big)
    finally:
        refs = [r for image in ("big", "small") for r in docker_refs(inv, image).values()]
        t.run(
            "docker rm -f regkit-bench-tls regkit-bench-plain >/dev/null 2>&1; "
            f"docker rmi -f regkit-bench/big regkit-bench/small {' '.join(map(quote, refs))} "
            f">/dev/null 2>&1; rm -rf {BENCH_DATA} /etc/docker/certs.d/"
            f"{quote(inv.registry.domain + ':5443')}",
            what="removing the reference registries and bench images",
        )
    results: dict[str, dict[str, float]] = {}
    for key, samples in rounds.items():
        results[key] = {
            name: (max if name.startswith("nginx") else statistics.median)(s[name] for s in samples)
            for name in samples[0]
        }

    def ratio(direction: str, other: str) -> float:
        pairs = zip(rounds[f"proxy_{big}mib"], rounds[f"{other}_{big}mib"], strict=True)
        return statistics.median(a[direction] / b[direction] for a, b in pairs)

    results["ratios"] = {
        "push_proxy_vs_native_tls": ratio("push_mb_s", "native-tls"),
        "pull_proxy_vs_native_tls": ratio("pull_mb_s", "native-tls"),
        "pull_proxy_vs_plain": ratio("pull_mb_s", "plain"),
        "push_proxy_vs_plain": ratio("push_mb_s", "plain"),
        "nginx_peak_largest_over_smallest": results[f"proxy_{big}mib"]["nginx_peak_rss_mib"]
        / results[f"proxy_{min(sizes)}mib"]["nginx_peak_rss_mib"],
        "nginx_temp_files": max(r["nginx_temp_files"] for k, r in results.items() if "proxy" in k),
    }
    return results | docker


def docker_setup_script(inv: Inventory, big_mib: int, small_layers: int) -> str:
    """Trust and log in for the three routes; build a one-layer image of ``big_mib`` MiB
    and an image of ``small_layers`` layers of 256 KiB each, of new random data, so
    that no registry holds any of its layers yet."""
    domain = inv.registry.domain
    copies = "\n".join(f"COPY f{i} /f{i}" for i in range(small_layers))
    return f"""set -e
mkdir -p /etc/docker/certs.d/{domain}:5443 {WORK}/docker {WORK}/big {WORK}/small
cp {REMOTE_DIR}/ca.crt /etc/docker/certs.d/{domain}:5443/ca.crt
export DOCKER_CONFIG={WORK}/docker
docker login -u regkit-probe --password-stdin {domain} < {REMOTE_DIR}/probe-password >/dev/null
head -c {big_mib}M /dev/urandom > {WORK}/big/blob
printf 'FROM scratch\\nCOPY blob /blob\\n' > {WORK}/big/Dockerfile
docker build -q -t regkit-bench/big {WORK}/big >/dev/null
for i in $(seq 0 {small_layers - 1}); do head -c 256K /dev/urandom > {WORK}/small/f$i; done
printf 'FROM scratch\\n%s\\n' {quote(copies)} > {WORK}/small/Dockerfile
docker build -q -t regkit-bench/small {WORK}/small >/dev/null
rm -rf {WORK}/big {WORK}/small
echo ready"""


def docker_refs(inv: Inventory, image: str) -> dict[str, str]:
    domain = inv.registry.domain
    return {
        "proxy": f"{domain}/bench/{image}:1",
        "native-tls": f"{domain}:5443/bench/{image}:1",
        "plain": f"127.0.0.1:5001/bench/{image}:1",
    }


def docker_script(inv: Inventory, image: str) -> str:
    """Push ``image`` along each route, then pull it back along each from an empty
    cache; print 'push ROUTE SECONDS' and 'pull ROUTE SECONDS'."""
    refs = docker_refs(inv, image)
    timed = 'a=$(date +%s.%N); "$@" >/dev/null || return 1; b=$(date +%s.%N); '
    timed += "awk -v a=$a -v b=$b 'BEGIN {print b - a}'"
    lines = [
        "set -e",
        f"export DOCKER_CONFIG={WORK}/docker",
        f"took() {{ {timed}; }}",
    ]
    for route, ref in refs.items():
        lines += [
            f"docker tag regkit-bench/{image} {quote(ref)}",
            f"s=$(took docker push {quote(ref)})",
            f'echo "push {route} $s"',
        ]
    every = f"regkit-bench/{image} {' '.join(map(quote, refs.values()))}"
    for route, ref in refs.items():
        lines += [
            f"docker rmi -f {every} >/dev/null 2>&1 || true",
            f"s=$(took docker pull -q {quote(ref)})",
            f'echo "pull {route} $s"',
        ]
    return "\n".join(lines)


def docker_path(
    inv: Inventory, t: Target, big_mib: int = 1024, small_layers: int = 40
) -> dict[str, dict[str, float]]:
    """Seconds of docker push and pull along each route, once, for both images (a
    second push would find every layer already there)."""
    t.check(docker_setup_script(inv, big_mib, small_layers), "building the bench images")
    results: dict[str, dict[str, float]] = {}
    for image in ("big", "small"):
        print(f"data path: docker push/pull of {image}, along each route", flush=True)
        out = t.check(docker_script(inv, image), f"docker push/pull of {image}").stdout
        results[f"docker_{image}"] = {
            f"{op}_{route}_s": float(seconds)
            for op, route, seconds in (line.split() for line in out.splitlines())
        }
    return results
