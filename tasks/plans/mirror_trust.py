"""``trust-ca --mirror``: each runtime on a host pulls Docker Hub's images through the mirror.

Per runtime, what points it at the mirror, and where its client certificate (see
:mod:`tasks.mirror`) and the registry's CA go:

- Docker: ``registry-mirrors`` in ``/etc/docker/daemon.json``, merged into what is
  there (every other key kept), then a reload (SIGHUP: dockerd reads
  ``registry-mirrors`` again without a restart, and containers are not touched);
  ``/etc/docker/certs.d/<domain>:<port>/`` holds ``ca.crt``, ``client.cert`` and
  ``client.key``, read per pull.
- containerd: ``<hosts dir>/docker.io/hosts.toml`` naming the mirror before Docker
  Hub, with the CA and the client pair beside it; read per pull, no restart.
- podman, buildah, skopeo: a ``registries.conf.d`` drop-in naming the mirror for
  ``docker.io``, and ``/etc/containers/certs.d/<domain>:<port>/``; read per call.

boot2docker keeps ``/etc/docker`` in RAM, so a mirror set there would be gone after
its next reboot: it is skipped, and says so. Pure; unit-tested.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

from tasks import render, scripts
from tasks.facts import parse_values
from tasks.inventory import Inventory
from tasks.plans.runtimes import RuntimeConfigError
from tasks.remote.upload import Upload

DAEMON_JSON = "/etc/docker/daemon.json"
DOCKER_CERTS = "/etc/docker/certs.d"
CONTAINERS_CERTS = "/etc/containers/certs.d"
DROP_IN = "/etc/containers/registries.conf.d/50-regkit-mirror.conf"
# What marks the files trust-ca --mirror writes (a hosts.toml without it is someone else's).
MARK = "regkit trust-ca --mirror"


@dataclass(frozen=True)
class RuntimeMirror:
    """One runtime's mirror settings on a host: its name, the folder that holds the CA
    and the client pair (``ca``, ``cert``, ``key``), and the file that names the mirror."""

    name: str
    folder: str
    config: str
    ca: str
    cert: str
    key: str


def certs_d(name: str, folder: str, config: str) -> RuntimeMirror:
    """A runtime that reads ``ca.crt``, ``client.cert`` and ``client.key`` from ``folder``."""
    files = (f"{folder}/{part}" for part in ("ca.crt", "client.cert", "client.key"))
    return RuntimeMirror(name, folder, config, *files)


def docker(inv: Inventory) -> RuntimeMirror:
    return certs_d("Docker", f"{DOCKER_CERTS}/{inv.registry.mirror_address}", DAEMON_JSON)


def containerd(hosts_dir: str) -> RuntimeMirror:
    folder = f"{hosts_dir}/docker.io"
    return RuntimeMirror(
        "containerd", folder, f"{folder}/hosts.toml", f"{folder}/regkit-mirror-ca.crt",
        f"{folder}/regkit-mirror-client.cert", f"{folder}/regkit-mirror-client.key",
    )  # fmt: skip


def containers(inv: Inventory) -> RuntimeMirror:
    folder = f"{CONTAINERS_CERTS}/{inv.registry.mirror_address}"
    return certs_d("podman/buildah/skopeo", folder, DROP_IN)


def runtimes_of(
    inv: Inventory, has_docker: bool, has_containerd: bool, has_containers: bool, hosts_dir: str
) -> list[RuntimeMirror]:
    """The runtimes a host has, as trust-ca found them."""
    out = [docker(inv)] if has_docker else []
    out += [containerd(hosts_dir)] if has_containerd else []
    out += [containers(inv)] if has_containers else []
    return out


@dataclass
class MirrorFacts:
    """What the host has of the mirror's settings, read in one command."""

    daemon_json: str | None = None
    # path -> "<sha256> <mode> <uid> <gid>" of the files trust-ca --mirror places
    files: dict[str, str] = field(default_factory=dict)
    # path -> PEM of each client certificate found
    certs: dict[str, bytes] = field(default_factory=dict)
    # path -> text of each runtime's mirror config file found (hosts.toml, drop-in)
    configs: dict[str, str] = field(default_factory=dict)


def facts_script(rts: list[RuntimeMirror]) -> str:
    paths = [p for rt in rts for p in (rt.ca, rt.cert, rt.key, rt.config)]
    return scripts.script(
        "mirror-trust-facts",
        daemon_json=DAEMON_JSON,
        certs=[rt.cert for rt in rts],
        configs=[rt.config for rt in rts if rt.config != DAEMON_JSON],
        paths=paths,
    )


def _text(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""


def parse_facts(output: str) -> MirrorFacts:
    facts = MirrorFacts()
    for key, value in parse_values(output).items():
        if key == "daemon_json":
            facts.daemon_json = _text(value)
        elif key.startswith("file:"):
            facts.files[key[5:]] = value
        elif key.startswith("cert:"):
            facts.certs[key[5:]] = _text(value).encode()
        elif key.startswith("config:"):
            facts.configs[key[7:]] = _text(value)
    return facts


def _daemon_config(text: str | None) -> dict[str, object]:
    try:
        doc = json.loads(text) if text and text.strip() else {}
    except ValueError as exc:
        raise RuntimeConfigError(
            f"{DAEMON_JSON} is not valid JSON ({exc}); fix it (dockerd would not start with "
            "it either), then run trust-ca --mirror again"
        ) from None
    if not isinstance(doc, dict):
        raise RuntimeConfigError(f"{DAEMON_JSON} is not a JSON object; fix it, then run again")
    mirrors = doc.get("registry-mirrors", [])
    if not isinstance(mirrors, list):
        raise RuntimeConfigError(
            f"{DAEMON_JSON}: registry-mirrors is not a list; fix it, then run again"
        )
    return doc


def with_mirror(text: str | None, url: str) -> str | None:
    """daemon.json with ``url`` first in ``registry-mirrors`` and every other key as it
    was; None when it already is."""
    doc = _daemon_config(text)
    mirrors = [m for m in doc.get("registry-mirrors", []) if m != url]  # type: ignore[union-attr]
    if doc.get("registry-mirrors", [None])[:1] == [url]:  # type: ignore[index]
        return None
    doc["registry-mirrors"] = [url, *mirrors]
    return json.dumps(doc, indent=2) + "\n"


def without_mirror(text: str | None, url: str) -> str | None:
    """daemon.json without ``url`` in ``registry-mirrors`` (the key gone when it names no
    other), or "" when nothing else is left; None when ``url`` is not there."""
    if text is None:
        return None
    doc = _daemon_config(text)
    mirrors = doc.get("registry-mirrors", [])
    if url not in mirrors:  # type: ignore[operator]
        return None
    rest = [m for m in mirrors if m != url]  # type: ignore[union-attr]
    if rest:
        doc["registry-mirrors"] = rest
    else:
        del doc["registry-mirrors"]
    return json.dumps(doc, indent=2) + "\n" if doc else ""


def names_mirror(text: str, url: str) -> bool:
    """Whether daemon.json ``text`` lists ``url`` among its registry-mirrors."""
    return bool(text) and url in _daemon_config(text).get("registry-mirrors", [])  # type: ignore[operator]


def reload_text(final: str) -> str:
    """What dockerd reloads from to reach ``final`` ("": no file): dockerd changes its
    mirrors only when the file names ``registry-mirrors``, so an empty list stands in for
    a key that is gone; ``final`` is written after the reload."""
    doc = json.loads(final) if final else {}
    doc.setdefault("registry-mirrors", [])
    return json.dumps(doc, indent=2) + "\n"


def hosts_toml(inv: Inventory, rt: RuntimeMirror) -> bytes:
    """containerd's hosts.toml for docker.io: the mirror first, Docker Hub after it."""
    ctx = {
        "mark": MARK,
        "mirror": inv.registry.mirror_url,
        "ca": rt.ca,
        "cert": rt.cert,
        "key": rt.key,
    }
    return render.render("containerd-mirror-hosts.toml.j2", ctx).encode()


def drop_in(inv: Inventory) -> bytes:
    """podman's registries.conf.d drop-in: docker.io images through the mirror first."""
    return render.render(
        "containers-mirror.conf.j2", {"mark": MARK, "mirror": inv.registry.mirror_address}
    ).encode()


@dataclass(frozen=True)
class MirrorPlan:
    """What trust-ca --mirror changes on one host (untrust-ca: what it removes)."""

    uploads: tuple[Upload, ...] = ()
    # The new daemon.json ("" removes it), or None to leave it; a reload follows a change.
    daemon_json: str | None = None
    remove: tuple[str, ...] = ()

    @property
    def changes(self) -> bool:
        return bool(self.uploads or self.daemon_json is not None or self.remove)


def foreign(rt: RuntimeMirror, facts: MirrorFacts) -> bool:
    """Whether the runtime's mirror config file exists and is not regkit's."""
    text = facts.configs.get(rt.config)
    return text is not None and MARK not in text


def plan(
    inv: Inventory,
    rts: list[RuntimeMirror],
    facts: MirrorFacts,
    ca: bytes,
    client: tuple[bytes, bytes] | None,
) -> MirrorPlan:
    """Point each of ``rts`` at the mirror. ``client`` is a fresh key and certificate
    when the host's are missing or no longer current, else None (they stay)."""
    url = inv.registry.mirror_url
    wanted: list[Upload] = []
    for rt in rts:
        if foreign(rt, facts):
            raise RuntimeConfigError(
                f"{rt.config} exists and is not regkit's: {rt.name} has a mirror set by "
                "someone else; merge it by hand or remove it, then run trust-ca --mirror again"
            )
        wanted.append(Upload(rt.ca, ca))
        if client is not None:
            key, cert = client
            wanted += [Upload(rt.key, key, 0o600), Upload(rt.cert, cert)]
        if rt.name == "containerd":
            wanted.append(Upload(rt.config, hosts_toml(inv, rt)))
        elif rt.config == DROP_IN:
            wanted.append(Upload(rt.config, drop_in(inv)))
    docker_json = None
    if any(rt.config == DAEMON_JSON for rt in rts):
        docker_json = with_mirror(facts.daemon_json, url)
    uploads = tuple(u for u in wanted if facts.files.get(u.path) != u.fact)
    return MirrorPlan(uploads, docker_json)


def untrust_plan(inv: Inventory, rts: list[RuntimeMirror], facts: MirrorFacts) -> MirrorPlan:
    """Remove what trust-ca --mirror placed (a foreign config file stays)."""
    url = inv.registry.mirror_url
    remove = [
        path
        for rt in rts
        for path in (rt.ca, rt.cert, rt.key, rt.config)
        if path in facts.files
        and path != DAEMON_JSON
        and not (path == rt.config and foreign(rt, facts))
    ]
    has_docker = any(rt.config == DAEMON_JSON for rt in rts)
    docker_json = without_mirror(facts.daemon_json, url) if has_docker else None
    return MirrorPlan((), docker_json, tuple(remove))
