"""``fab -H regbox deploy``: the registry and its nginx proxy, over SSH, verified.

Read facts in one command, compare with what is wanted, change only what
differs, then prove the result with a push and pull through the public URL.

On the host (all root-owned):

- ``/etc/regkit/nginx/``     the proxy's build context (configuration only)
- ``/etc/regkit/registry/``  the registry's ``config.yml`` (0600, holds the http secret)
- ``/etc/regkit/tls/``       ``server.crt`` and ``server.key`` (0600), mounted read-only
- ``/etc/regkit/auth/``      ``htpasswd`` (0640, group of nginx's worker), mounted read-only
- ``/etc/regkit/ca.crt``, ``/etc/regkit/probe-password`` (0600)
- ``/etc/docker/certs.d/<domain>[:port]/ca.crt`` so the host's Docker trusts the registry
- the registry's data in the inventory's ``data_dir``
"""

from __future__ import annotations

import difflib
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from invoke import Collection, Context

from tasks import inventory, pki, render, users
from tasks.cli import task
from tasks.errors import PkiError, RegkitError, RemoteError
from tasks.inventory import Inventory
from tasks.remote import (
    EMIT,
    Target,
    Upload,
    aliases_from,
    each_host,
    files_fact,
    host_lock,
    q,
    sha256,
)
from tasks.report import CHANGED, Report

REMOTE_DIR = "/etc/regkit"
# nginx publishes its port through NETWORK; the registry is only on BACKEND, an
# internal network without an address on the host: no route reaches it, from a
# neighbour or from the host itself, whatever the firewall says. Only nginx,
# attached to both, talks to it.
NETWORK = "regkit"
BACKEND = "regkit-backend"
BACKEND_OPTIONS = ("--internal", "-o", "com.docker.network.bridge.inhibit_ipv4=true")
REGISTRY = "regkit-registry"
NGINX = "regkit-nginx"
NGINX_IMAGE = "regkit-nginx"
PROBE_REPO = "regkit/probe"
MIN_FREE_KB = 1024 * 1024
SPEC_LABEL = "regkit.spec"
INHIBIT_IPV4 = "com.docker.network.bridge.inhibit_ipv4"
NETWORK_FORMAT = f'{{{{.Name}}}} {{{{.Internal}}}} {{{{index .Options "{INHIBIT_IPV4}"}}}}'
# What docker network inspect says of BACKEND when it is as BACKEND_OPTIONS made it.
BACKEND_WANTED = "true true"
# What runs now and what ran before it, so that `fab rollback` can return to it.
DEPLOYED = f"{REMOTE_DIR}/deployed.json"

# Which files make which part change: build context -> rebuild nginx; registry
# config -> recreate the registry; tls/auth -> reload nginx.
NGINX_CONTEXT = (
    "Dockerfile",
    "nginx.conf",
    "registry.conf",
    *(f"ui/{name}" for name in render.UI_FILES),
)


def wanted_files(inv: Inventory) -> list[Upload]:
    """Everything deploy places on a registry host, from local state."""
    pki.require(inv)
    p = pki.paths(inv)
    build = {rel: content.encode() for rel, (content, _mode) in render.render_all(inv).items()}
    gid = render.CONTAINER.worker_gid
    ca = pki.trust_bundle(inv)
    probe_password = users.probe_credential(inv)[0]
    files = [Upload(f"{REMOTE_DIR}/nginx/{name}", build[f"nginx/{name}"]) for name in NGINX_CONTEXT]
    files += [
        Upload(f"{REMOTE_DIR}/registry/config.yml", build["registry/config.yml"], 0o600),
        Upload(
            f"{REMOTE_DIR}/registry-readonly/config.yml",
            build["registry-readonly/config.yml"],
            0o600,
        ),
        Upload(f"{REMOTE_DIR}/tls/server.crt", p.server_cert.read_bytes()),
        Upload(f"{REMOTE_DIR}/tls/server.key", p.server_key.read_bytes(), 0o600),
        Upload(f"{REMOTE_DIR}/auth/htpasswd", users.deployed_htpasswd(inv), 0o640, 0, gid),
        Upload(f"{REMOTE_DIR}/ca.crt", ca),
        Upload(f"{REMOTE_DIR}/probe-password", probe_password.encode(), 0o600),
        Upload(inv.registry.certs_d, ca),
    ]
    return files


def nginx_tag(files: list[Upload]) -> str:
    """The proxy image's tag: a hash of its build context, so unchanged is never rebuilt."""
    h = hashlib.sha256()
    for f in files:
        if f.path.startswith(f"{REMOTE_DIR}/nginx/"):
            h.update(f.path.encode() + b"\0" + f.content + b"\0")
    return f"{NGINX_IMAGE}:{h.hexdigest()[:16]}"


@dataclass(frozen=True)
class RunSpec:
    """A container as deploy wants it; its hash is kept in a label to detect drift."""

    name: str
    image: str
    args: tuple[str, ...]
    # Networks joined after the first (``--network`` in ``args``), before it starts.
    more_networks: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        parts = [self.name, self.image, self.args]
        if self.more_networks:
            parts.append(self.more_networks)
        return sha256(json.dumps(parts).encode())[:16]

    def docker_run(self) -> str:
        """The command that starts the container (``docker run``, or ``docker create``,
        ``network connect`` and ``start`` when it joins more than one network)."""
        label = ("--label", f"{SPEC_LABEL}={self.digest}")
        if not self.more_networks:
            argv = ["docker", "run", "-d", "--name", self.name, *label, *self.args, self.image]
            return " ".join(q(a) for a in argv)
        argv = ["docker", "create", "--name", self.name, *label, *self.args, self.image]
        steps = [" ".join(q(a) for a in argv)]
        steps += [f"docker network connect {q(net)} {q(self.name)}" for net in self.more_networks]
        steps.append(f"docker start {q(self.name)}")
        return " && ".join(steps)


def registry_spec(
    inv: Inventory, config_digest: str, image: str = "", config_dir: str = "registry"
) -> RunSpec:
    """The registry container; ``config_dir`` "registry-readonly" is the gc variant."""
    reg = inv.registry
    return RunSpec(
        REGISTRY,
        image or reg.images.registry,
        (
            "--network", BACKEND, "--network-alias", "registry",
            "--restart", "unless-stopped",
            "--label", f"regkit.config={config_digest[:16]}",
            "-v", f"{reg.data_dir}:/var/lib/registry",
            "-v", f"{REMOTE_DIR}/{config_dir}:/etc/docker/registry:ro",
        ),
    )  # fmt: skip


def nginx_mounts() -> tuple[str, ...]:
    """The proxy's secrets, as folders (a file mount would keep the old inode on replace)."""
    lay = render.CONTAINER
    return (
        "-v", f"{REMOTE_DIR}/tls:{lay.tls_dir}:ro",
        "-v", f"{REMOTE_DIR}/auth:{lay.auth_dir}:ro",
    )  # fmt: skip


def nginx_spec(inv: Inventory, tag: str) -> RunSpec:
    return RunSpec(
        NGINX,
        tag,
        (
            "--network", NETWORK,
            "--restart", "unless-stopped",
            "-p", f"{inv.registry.port}:{render.CONTAINER.listen}",
            *nginx_mounts(),
        ),
        more_networks=(BACKEND,),
    )  # fmt: skip


@dataclass
class Container:
    """What ``docker inspect`` says of a container."""

    id: str
    image_id: str
    spec: str
    running: bool
    started: str


@dataclass
class Facts:
    """Everything deploy needs to know about a host, read in one command."""

    os: str = "unknown"
    apt: bool = False
    apache2_utils: bool = False
    curl: bool = False
    docker: str = ""
    disk_free_kb: int = 0
    port_holder: str = ""
    files: dict[str, str] = field(default_factory=dict)
    containers: dict[str, Container] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)
    # network name -> "<internal> <inhibit_ipv4>", as docker network inspect says
    networks: dict[str, str] = field(default_factory=dict)
    # "<ip_forward> <first line of iptables -S FORWARD>", e.g. "1 -P FORWARD ACCEPT"
    forwarding: str = ""
    deployed: dict[str, Any] = field(default_factory=dict)


def facts_script(inv: Inventory, paths: list[str], image_refs: list[str]) -> str:
    """A POSIX sh script that prints ``key<TAB>value`` lines; it changes nothing."""
    reg = inv.registry
    lines = [
        EMIT,
        'if [ -r /etc/os-release ]; then . /etc/os-release; fi; emit os "${ID:-unknown}"',
        "command -v apt-get >/dev/null 2>&1 && emit apt yes",
        "command -v curl >/dev/null 2>&1 && emit curl yes",
        "dpkg-query -W -f='${Status}' apache2-utils 2>/dev/null | grep -q 'ok installed'"
        " && emit apache2_utils yes",
        "emit docker \"$(docker version --format '{{.Server.Version}}' 2>/dev/null)\"",
        f'd={q(reg.data_dir)}; while [ ! -d "$d" ]; do d=$(dirname "$d"); done',
        'emit disk_free_kb "$(df -Pk "$d" | awk \'NR==2 {print $4}\')"',
        f"emit port_holder \"$(ss -Htlnp 'sport = :{reg.port}' 2>/dev/null | head -1)\"",
        "docker network inspect --format "
        f"{q(NETWORK_FORMAT)} {NETWORK} {BACKEND} 2>/dev/null "
        "| sed -n 's#^\\([^ ]*\\) #net:\\1\\t#p'",
        'emit forwarding "$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null) '
        '$(iptables -S FORWARD 2>/dev/null | head -1)"',
        f"[ -f {DEPLOYED} ] && emit deployed \"$(tr -d '\\n' < {DEPLOYED})\"",
    ]
    lines.append(files_fact(paths))
    fmt = f'{{{{.Id}}}}|{{{{.Image}}}}|{{{{index .Config.Labels "{SPEC_LABEL}"}}}}|'
    fmt += "{{.State.Running}}|{{.State.StartedAt}}"
    # One docker call for both containers and one for the images: each costs ~20 ms.
    lines.append(
        f"docker inspect --type container --format {q('{{.Name}}|' + fmt)} {REGISTRY} {NGINX} "
        "2>/dev/null | sed -n 's#^/\\([^|]*\\)|#ctr:\\1\\t#p'"
    )
    refs = " ".join(q(ref) for ref in image_refs)
    lines.append(
        "imgs=$(docker image inspect --format "
        f"'{{{{json .RepoTags}}}}{{{{json .RepoDigests}}}} {{{{.Id}}}}' {refs} 2>/dev/null)"
    )
    for ref in image_refs:
        lines.append(
            f"i=$(printf '%s\\n' \"$imgs\" | grep -F {q(json.dumps(ref))} | head -1 | "
            f'sed \'s/.* //\') && [ -n "$i" ] && emit img:{q(ref)} "$i"'
        )
    lines.append("true")
    return "\n".join(lines)


def parse_facts(output: str) -> Facts:
    """Facts from the script's output (pure; unit-tested)."""
    f = Facts()
    for line in output.splitlines():
        key, _, value = line.partition("\t")
        if key == "os":
            f.os = value
        elif key in ("apt", "apache2_utils", "curl"):
            setattr(f, key, value == "yes")
        elif key == "docker":
            f.docker = value
        elif key == "disk_free_kb":
            f.disk_free_kb = int(value) if value.isdigit() else 0
        elif key == "port_holder":
            f.port_holder = value
        elif key.startswith("file:"):
            f.files[key[5:]] = value
        elif key.startswith("ctr:"):
            cid, image_id, spec, running, started = (value.split("|") + [""] * 5)[:5]
            f.containers[key[4:]] = Container(
                cid, image_id, "" if spec == "<no value>" else spec, running == "true", started
            )
        elif key.startswith("img:"):
            f.images[key[4:]] = value
        elif key.startswith("net:"):
            f.networks[key[4:]] = value
        elif key == "forwarding":
            f.forwarding = value
        elif key == "deployed":
            try:
                f.deployed = json.loads(value)
            except ValueError:
                f.deployed = {}
    return f


def differing(files: list[Upload], facts: Facts) -> list[Upload]:
    """Files whose content, mode or owner on the host differ from what is wanted."""
    return [f for f in files if facts.files.get(f.path) != f.fact]


def preflight(inv: Inventory, t: Target, facts: Facts) -> str:
    """Stop before any change when the host cannot run the registry; else a summary."""
    where = t.alias
    if not facts.docker:
        raise RemoteError(
            f"{where}: no Docker engine answers (docker version); install Docker "
            "(Debian: apt-get install docker.io) and start it"
        )
    if facts.disk_free_kb < MIN_FREE_KB:
        raise RemoteError(
            f"{where}: only {facts.disk_free_kb // 1024} MiB free under "
            f"{inv.registry.data_dir}; free at least 1 GiB first"
        )
    ours = NGINX in facts.containers
    if facts.port_holder and not ours and "docker-proxy" not in facts.port_holder:
        raise RemoteError(
            f"{where}: port {inv.registry.port} is already in use "
            f"({facts.port_holder.split()[-1]}); stop that service or set registry.port"
        )
    backend = facts.networks.get(BACKEND, BACKEND_WANTED)
    if backend != BACKEND_WANTED:
        raise RemoteError(
            f"{where}: the network {BACKEND} exists but is not internal without a host "
            f"address ({backend!r}); remove it ('docker network rm {BACKEND}' after "
            f"'docker rm -f {REGISTRY}': the data stays) and deploy again"
        )
    return (
        f"{facts.os}, docker {facts.docker}, {facts.disk_free_kb // 1024 // 1024} GiB free, "
        f"port {inv.registry.port} {'ours' if ours else 'free'}"
    )


def forwarding_warning(facts: Facts) -> str:
    """A warning when the host routes other hosts' packets into container networks."""
    ip_forward, _, policy = facts.forwarding.partition(" ")
    if ip_forward != "1" or policy.strip() != "-P FORWARD ACCEPT":
        return ""
    return (
        "this host forwards packets from other hosts into its container networks "
        "(ip_forward on, iptables FORWARD policy ACCEPT): the registry is on an internal "
        "network no route reaches, but other containers here are open to any neighbour "
        "that routes to them; set the policy to DROP ('iptables -P FORWARD DROP')"
    )


def container_change(current: Container | None, spec: RunSpec, image_id: str) -> str:
    """Why a container must be (re)created, or "" to leave it alone (pure; unit-tested)."""
    if current is None:
        return "created"
    if current.spec != spec.digest:
        return "recreated: its configuration changed"
    if image_id and current.image_id != image_id:
        return "recreated: its image changed"
    if not current.running:
        return "started: it was stopped"
    return ""


def replace_script(spec: RunSpec) -> str:
    """Swap a container, keeping the old one until the new one runs; roll back on failure."""
    old = f"{spec.name}-previous"
    return f"""set -u
docker rm -f {old} >/dev/null 2>&1
if docker inspect {spec.name} >/dev/null 2>&1; then
  docker stop -t 30 {spec.name} >/dev/null || exit 1
  docker rename {spec.name} {old} || {{ docker start {spec.name} >/dev/null; exit 1; }}
fi
if {spec.docker_run()} >/dev/null && sleep 2 \\
   && [ "$(docker inspect --format '{{{{.State.Running}}}} {{{{.RestartCount}}}}' {spec.name})" \\
        = "true 0" ]; then
  docker rm -f {old} >/dev/null 2>&1
  exit 0
fi
echo "new {spec.name} did not stay up:" >&2
docker logs --tail 5 {spec.name} >&2 2>&1
docker rm -f {spec.name} >/dev/null 2>&1
if docker inspect {old} >/dev/null 2>&1; then
  docker rename {old} {spec.name} && docker start {spec.name} >/dev/null
  echo "the previous {spec.name} was restored" >&2
fi
exit 1"""


def reload_nginx(t: Target) -> None:
    """Test the running proxy's configuration, then reload it: no restart, no dropped request."""
    t.check(
        f"docker exec {NGINX} nginx -t 2>&1 && docker exec {NGINX} nginx -s reload",
        "reloading nginx",
    )


def verify_script(inv: Inventory, full: bool = True) -> str:
    """Prove the registry from the host: ping, 401 without and 200 with a login, push+pull.

    When nothing changed (``full=False``) the push+pull gives way to reading the
    probe image's manifest back with its digest; if that image is gone, it is
    pushed and pulled after all.
    """
    addr = inv.registry.address
    url = f"https://{addr}"
    ref = f"{addr}/{PROBE_REPO}:deploy"
    ca = f"{REMOTE_DIR}/ca.crt"
    pw = f"{REMOTE_DIR}/probe-password"
    user = users.PROBE_USER
    return f"""set -eu
fail() {{ echo "$1" >&2; exit 1; }}
work=$(mktemp -d)
trap 'docker logout {addr} >/dev/null 2>&1; rm -rf "$work"' EXIT
if command -v curl >/dev/null 2>&1; then
  login() {{ printf 'user = "%s:%s"\\n' {user} "$(cat {pw})"; }}
  # Through nginx to the registry: waits out an asynchronous reload just before.
  for i in 1 2 3 4 5 6 7 8 9 10; do
    code=$(login | curl -sS -K - -o /dev/null -w '%{{http_code}}' --cacert {ca} {url}/v2/ \\
      2>"$work/err") && [ "$code" = 200 ] && break
    sleep 1
  done
  [ "$code" = 200 ] || fail "{url}/v2/ with a valid login: $code $(tail -1 "$work/err"); \\
does {inv.registry.domain} resolve to this host, and does the host trust the CA?"
  code=$(curl -sS -o /dev/null -w '%{{http_code}}' --cacert {ca} {url}/_ping)
  [ "$code" = 200 ] || fail "{url}/_ping answered $code, not 200"
  hdr=$(curl -sS -o /dev/null -D - --cacert {ca} {url}/v2/)
  echo "$hdr" | head -1 | grep -q ' 401' || fail "{url}/v2/ without a login did not answer 401"
  echo "$hdr" | grep -qi '^docker-distribution-api-version: registry/2.0' \\
    || fail "the 401 from {url}/v2/ lacks Docker-Distribution-Api-Version"
  echo "http: /v2/ 200 with a login, 401 without; /_ping 200"
fi
{"" if full else _served_probe(inv)}export DOCKER_CONFIG="$work/docker"
mkdir -p "$DOCKER_CONFIG" "$work/ctx"
out=$(docker login -u {user} --password-stdin {addr} < {pw} 2>&1) \\
  || fail "docker login {addr}: $(echo "$out" | grep -v -e WARNING -e 'credential' | tail -2)"
# The probe image is kept (1 KiB) and pushed again next time: same digest, nothing piles up.
if ! docker image inspect {ref} >/dev/null 2>&1; then
  printf 'regkit deploy probe\\n' > "$work/ctx/probe.txt"
  printf 'FROM scratch\\nCOPY probe.txt /probe.txt\\n' > "$work/ctx/Dockerfile"
  out=$(docker build -q -t {ref} "$work/ctx" 2>&1) || fail "building the probe image: $out"
fi
out=$(docker push {ref} 2>&1) || fail "docker push {ref}: $(echo "$out" | tail -2)"
pushed=$(echo "$out" | sed -n 's/.*digest: \\(sha256:[0-9a-f]*\\).*/\\1/p')
[ -n "$pushed" ] || fail "docker push {ref} reported no digest"
docker rmi -f {ref} >/dev/null
out=$(docker pull -q {ref} 2>&1) || fail "docker pull {ref}: $(echo "$out" | tail -2)"
pulled=$(docker inspect --format '{{{{range .RepoDigests}}}}{{{{.}}}} {{{{end}}}}' {ref})
case "$pulled" in
  *"$pushed"*) ;;
  *) fail "pulled digest ($pulled) differs from pushed ($pushed)";;
esac
echo "push/pull: {ref} $pushed"
"""


def _served_probe(inv: Inventory) -> str:
    """Script lines: exit early, with a line of proof, if the probe manifest is served."""
    accept = ", ".join(
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.oci.image.manifest.v1+json",
        )
    )
    url = f"{inv.registry.url}/v2/{PROBE_REPO}/manifests/deploy"
    return f"""if command -v curl >/dev/null 2>&1; then
  digest=$(login | curl -sS -K - -I --cacert {REMOTE_DIR}/ca.crt -H {q(f"Accept: {accept}")} \
    {url} | tr -d '\r' | sed -n 's/^docker-content-digest: *//Ip')
  if [ -n "$digest" ]; then
    echo "read back: {inv.registry.address}/{PROBE_REPO}:deploy manifest, $digest \
(nothing changed: no push)"
    exit 0
  fi
fi
"""


def ensure_local(inv: Inventory, rep: Report, dry_run: bool = False) -> None:
    """Local material: a CA and server certificate matching the inventory, rendered files."""
    p = pki.paths(inv)
    if not pki.ca_exists(p):
        if dry_run:
            raise PkiError(f"{p.root}: no CA yet (a dry run makes none); run 'invoke pki.init'")
        rep.info("no CA yet: making one (the CA passphrase is asked once, then kept encrypted)")
        pki.init_pki(inv, pki.ask_passphrase(confirm=True))
        rep.changed(
            "local", "PKI", f"new CA, fingerprint {pki.fingerprint(pki.read_cert(p.ca_cert))}"
        )
    else:
        pki.check_server(inv)
        rep.unchanged("local", "PKI", "CA and server certificate match the inventory")
    users.deployed_htpasswd(inv)


def stream_to(rep: Report, alias: str, prefix: str) -> Callable[[str], None]:
    return lambda line: rep.info(f"[{alias}]   {prefix}{line}")


def deploy_facts_script(inv: Inventory) -> str:
    """The facts a deploy reads: its files, containers and images, and the host."""
    files = wanted_files(inv)
    return facts_script(
        inv, [f.path for f in files], [inv.registry.images.registry, nginx_tag(files)]
    )


def deploy_host(
    inv: Inventory, t: Target, rep: Report, dry_run: bool, facts_output: str | None = None
) -> None:
    """Deploy to one connected host; ``facts_output`` is what the facts script printed,
    if it already ran (with the host lock), else it runs now."""
    a = t.alias
    files = wanted_files(inv)
    tag = nginx_tag(files)
    reg_image = inv.registry.images.registry
    if facts_output is None:
        facts_output = t.check(deploy_facts_script(inv), "reading facts").stdout
    facts = parse_facts(facts_output)
    rep.ok(a, "preflight", preflight(inv, t, facts))
    if warning := forwarding_warning(facts):
        rep.info(f"[{a}] WARNING: {warning}")

    if facts.apache2_utils:
        rep.unchanged(a, "apache2-utils", "installed")
    elif not facts.apt:
        rep.skipped(a, "apache2-utils", f"no apt on this host ({facts.os}); htpasswd not installed")
    elif dry_run:
        rep.changed(a, "apache2-utils", "would install with apt")
    else:
        t.check(
            "export DEBIAN_FRONTEND=noninteractive\n"
            "apt-get install -y -q --no-install-recommends apache2-utils >/dev/null 2>&1 || "
            "{ apt-get update -q >/dev/null && "
            "apt-get install -y -q --no-install-recommends apache2-utils >/dev/null; }",
            "installing apache2-utils with apt",
        )
        rep.changed(a, "apache2-utils", "installed with apt")

    changed = differing(files, facts)
    for f in changed:
        why = "new" if f.path not in facts.files else "content or mode differs"
        rep.changed(a, f"file {f.path}", why + (" (dry run)" if dry_run else ""))
    if not changed:
        rep.unchanged(a, "files", f"all {len(files)} match (sha256, mode, owner)")
    if dry_run:
        show_diffs(t, rep, changed, facts)
        plan_containers(inv, rep, a, facts, files, tag)
        return
    t.upload(changed)
    changed_paths = {f.path for f in changed}

    # First what can fail without touching anything that runs: the images, nginx -t.
    config = next(f for f in files if f.path.endswith("/registry/config.yml"))
    reg = registry_spec(inv, config.digest)
    if reg_image not in facts.images:
        t.check(f"docker pull -q {q(reg_image)} >/dev/null", f"pulling {reg_image}")
        rep.changed(a, f"image {reg_image}", "pulled")
        facts.images[reg_image] = t.check(
            f"docker image inspect --format '{{{{.Id}}}}' {q(reg_image)}", "reading image id"
        ).stdout.strip()
    built = build_nginx(t, rep, tag, facts)
    spec = nginx_spec(inv, tag)
    nginx_why = container_change(facts.containers.get(NGINX), spec, facts.images.get(tag, ""))
    if built or nginx_why:
        test_nginx(t, rep, tag)

    for name, options in ((NETWORK, ()), (BACKEND, BACKEND_OPTIONS)):
        if name in facts.networks:
            rep.unchanged(a, f"network {name}")
            continue
        create = " ".join(q(x) for x in ("docker", "network", "create", *options, name))
        t.check(f"{create} >/dev/null", f"creating network {name}")
        rep.changed(a, f"network {name}", "created" + (" (internal)" if options else ""))
    registry_why = container_change(facts.containers.get(REGISTRY), reg, facts.images[reg_image])
    if registry_why:
        t.check(replace_script(reg), f"starting {REGISTRY}")
        rep.changed(a, f"container {REGISTRY}", registry_why)
    else:
        rep.unchanged(a, f"container {REGISTRY}", "running, same image and configuration")

    if built or nginx_why:
        t.check(replace_script(spec), f"starting {NGINX}")
        rep.changed(a, f"container {NGINX}", nginx_why or "recreated: its image changed")
    else:
        rep.unchanged(a, f"container {NGINX}", "running, same image and configuration")
        # nginx reads the password file on every request: a new one needs no reload.
        reasons = []
        if any("/tls/" in p for p in changed_paths):
            reasons.append("certificate changed")
        if registry_why:
            reasons.append("registry recreated")
        if reasons:
            reload_nginx(t)
            rep.changed(a, "nginx reload", ", ".join(reasons))

    # Anything changed on this host: prove it with a push and a pull.
    full = rep.count(CHANGED, a) > 0
    what = "verifying the registry" + (" (push/pull)" if full else "")
    proof = t.check(verify_script(inv, full), what).stdout.strip()
    for line in proof.splitlines():
        rep.ok(a, "verify", line)
    record_deployed(t, rep, facts.deployed, {"registry": reg_image, "nginx": tag})


def plan_containers(
    inv: Inventory, rep: Report, a: str, facts: Facts, files: list[Upload], tag: str
) -> None:
    """For a dry run: which image would be built and which container (re)created."""
    config = next(f for f in files if f.path.endswith("/registry/config.yml"))
    reg = registry_spec(inv, config.digest)
    image_id = facts.images.get(inv.registry.images.registry, "")
    specs = [(REGISTRY, reg, image_id), (NGINX, nginx_spec(inv, tag), facts.images.get(tag, ""))]
    if tag not in facts.images:
        rep.changed(a, f"image {tag}", "would build (dry run)")
    for name, spec, wanted_id in specs:
        why = container_change(facts.containers.get(name), spec, wanted_id)
        if name == NGINX and tag not in facts.images and not why:
            why = "recreated: its image changed"
        if why:
            rep.changed(a, f"container {name}", f"would be {why} (dry run)")
        else:
            rep.unchanged(a, f"container {name}", "running, same image and configuration")


def build_nginx(t: Target, rep: Report, tag: str, facts: Facts) -> bool:
    """Build the proxy image unless an image with this context hash exists; True if built."""
    if tag in facts.images:
        rep.unchanged(t.alias, f"image {tag}", "build context unchanged")
        return False
    rep.info(f"[{t.alias}] image {tag}: building ...")
    start = time.monotonic()
    t.check(
        f"docker build -t {q(tag)} {REMOTE_DIR}/nginx",
        f"building {tag}",
        stream=stream_to(rep, t.alias, "build: "),
    )
    rep.changed(t.alias, f"image {tag}", f"built in {time.monotonic() - start:.1f} s")
    return True


def test_nginx(t: Target, rep: Report, tag: str) -> None:
    """``nginx -t`` in the new image with the new files, before anything running changes."""
    mounts = " ".join(q(x) for x in nginx_mounts())
    test = t.run(
        f"docker run --rm --add-host registry:127.0.0.1 {mounts} {q(tag)} nginx -t",
        what="nginx -t",
    )
    if test.failed:
        raise RemoteError(
            f"{t.alias}: nginx -t failed in the new image {tag}; nothing running was changed:"
            f"\n{test.stderr.strip()}"
        )
    rep.ok(t.alias, "nginx -t", "new configuration is valid")


def record_deployed(t: Target, rep: Report, before: dict[str, Any], now: dict[str, str]) -> None:
    """Keep on the host what runs now, and what ran before it (for ``fab rollback``)."""
    current = {k: before.get(k) for k in ("registry", "nginx")}
    if current == now:
        return
    record = {**now, "previous": current if all(current.values()) else before.get("previous")}
    t.upload([Upload(DEPLOYED, (json.dumps(record, sort_keys=True) + "\n").encode())])
    rep.changed(t.alias, "deploy record", f"{DEPLOYED} (rollback returns to the previous images)")


def show_diffs(t: Target, rep: Report, changed: list[Upload], facts: Facts) -> None:
    """For a dry run: a unified diff of each changed non-secret file."""
    for f in changed:
        if f.mode & 0o077 != 0o044 or f.path not in facts.files:
            continue
        old = t.run(f"cat {q(f.path)}", what=f"reading {f.path}").stdout
        diff = difflib.unified_diff(
            old.splitlines(keepends=True),
            f.content.decode().splitlines(keepends=True),
            f"{t.alias}:{f.path}",
            f"wanted:{f.path}",
        )
        rep.info("".join(diff).rstrip())


@task(help={"dry-run": "Connect, read facts and show what would change; change nothing."})
def deploy(c: Context, dry_run: bool = False) -> None:
    """Deploy the registry and its TLS proxy to the registry host(s), then prove it."""
    inv = inventory.load()
    aliases = aliases_from(c, inv, "registry", "deploy")
    if not aliases:
        return
    rep = Report()
    ensure_local(inv, rep, dry_run)

    def work(t: Target) -> None:
        start = time.monotonic()
        if dry_run:
            deploy_host(inv, t, rep, dry_run=True)
        else:
            with host_lock(t, "deploy", deploy_facts_script(inv)) as facts:
                deploy_host(inv, t, rep, False, facts)
        took = time.monotonic() - start
        rep.info(f"[{t.alias}] done in {took:.1f} s, {t.commands} SSH commands")

    each_host(c, inv, aliases, rep, "deploy", work)
    ca = pki.read_cert(pki.paths(inv).ca_cert)
    rep.info(f"registry: {inv.registry.url}")
    rep.info(f"CA SHA-256 fingerprint: {pki.fingerprint(ca)}")
    rep.info("next: make Docker hosts trust it with 'fab -H <client> trust-ca'")


def undeploy_host(inv: Inventory, t: Target, rep: Report, purge_data: bool) -> None:
    """Remove the containers, network and proxy images; the data only with ``purge_data``."""
    out = t.check(
        f"""for c in {NGINX} {REGISTRY}; do
  docker rm -f "$c" >/dev/null 2>&1 && echo "container $c"
done
for n in {NETWORK} {BACKEND}; do
  docker network rm "$n" >/dev/null 2>&1 && echo "network $n"
done
for i in $(docker image ls -q {NGINX_IMAGE} | sort -u); do
  docker rmi -f "$i" >/dev/null 2>&1
done
true""",
        "removing containers",
    ).stdout.split("\n")
    removed = [line for line in out if line]
    for thing in removed:
        rep.changed(t.alias, thing, "removed")
    if not removed:
        rep.unchanged(t.alias, "containers", "none were running")
    data = inv.registry.data_dir
    if purge_data:
        t.check(
            f"rm -rf {q(data)} {REMOTE_DIR} {q(str(PurePosixPath(inv.registry.certs_d).parent))}",
            "purging data",
        )
        rep.changed(t.alias, f"data {data}", "deleted with /etc/regkit")
    else:
        rep.unchanged(t.alias, f"data {data}", "kept (--purge-data deletes it)")


@task(
    help={
        "purge-data": "Also delete the registry's data (every pushed image) and /etc/regkit.",
        "yes": "Do not ask for confirmation of --purge-data.",
    }
)
def undeploy(c: Context, purge_data: bool = False, yes: bool = False) -> None:
    """Stop and remove the registry and proxy containers; keep pushed images unless told."""
    inv = inventory.load()
    aliases = aliases_from(c, inv, "registry", "undeploy")
    if not aliases:
        return
    rep = Report()
    if purge_data and not yes:
        if not sys.stdin.isatty():
            raise RegkitError("--purge-data needs confirmation: add --yes when not at a terminal")
        answer = input(
            f"Delete every pushed image in {inv.registry.data_dir} on {', '.join(aliases)}? "
            "Type 'purge' to confirm: "
        )
        if answer.strip() != "purge":
            raise RegkitError("not confirmed; nothing was changed")

    def work(t: Target) -> None:
        with host_lock(t, "undeploy"):
            undeploy_host(inv, t, rep, purge_data)

    each_host(c, inv, aliases, rep, "undeploy", work)


ns = Collection("deploy", deploy, undeploy)
