"""The deploy plan: what a registry host lacks, from its facts (pure; unit-tested).

The facts come from one script (``templates/sh/deploy-facts.sh.j2``); the plan
lists every step with why, in the order the apply step carries them out: the
pinned images the host lacks (pulled, or with ``--ship-images`` carried over SSH:
first, so that a host that cannot pull them is told before anything changes), the
package, the files (and, once, the configs regkit kept before staging them), the proxy
image and its ``nginx -t``, the token service's image, the networks, the three
containers (token service, registry, proxy), a reload, the proof, the deploy record
and the removal of configs no record names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from tasks.errors import RemoteError
from tasks.facts import mapping
from tasks.inventory import Inventory
from tasks.layout import (
    BACKEND,
    BACKEND_OPTIONS,
    LEGACY_CONFIG_FILES,
    LEGACY_CONFIGS,
    MAINTENANCE_FLAGS,
    MIRROR,
    MIRROR_CONFIG_DIR,
    NETWORK,
    NGINX,
    PROBE_TAG,
    REGISTRY,
    REGISTRY_CONFIGS,
    TLS_DIR,
    TOKEND,
    mirror_config_dir,
    probe_tag,
)
from tasks.plans.deploy_facts import Container, DeployFacts
from tasks.plans.preflight import (
    forwarding_warning,
    other_name_warning,
    package_state,
    preflight,
    self_name_change,
)
from tasks.remote.upload import Upload, sha256
from tasks.wanted import (
    RunSpec,
    mirror_config,
    mirror_spec,
    nginx_spec,
    nginx_tag,
    registry_configs,
    registry_spec,
    token_spec,
    token_tag,
)


def container_change(current: Container | None, spec: RunSpec, image_id: str) -> str:
    """Why a container must be (re)created, or "" to leave it alone.

    ``image_id`` is the ID of the image it should run, or "" when that image is not
    on the host yet (it will be pulled or built, and then differs)."""
    if current is None:
        return "created"
    if current.spec != spec.digest:
        return "recreated: its configuration changed"
    if current.image_id != image_id:
        return "recreated: its image changed"
    if not current.running:
        return "started: it was stopped"
    return ""


@dataclass(frozen=True)
class FileChange:
    upload: Upload
    why: str


@dataclass(frozen=True)
class ContainerStep:
    spec: RunSpec
    why: str  # "" leaves the container alone


@dataclass(frozen=True)
class DeployPlan:
    """Everything one deploy does on one host, in order."""

    preflight: str
    warnings: tuple[str, ...]
    # apache2-utils: "installed", "install", "no apt", or "unreachable <uri>" when apt
    # cannot reach its source
    package: str
    files: tuple[FileChange, ...]
    file_count: int
    # The pinned images the host lacks and needs: to pull, or to ship (--ship-images).
    pull: tuple[str, ...]
    build: str  # the proxy image to build, or ""
    create_networks: tuple[str, ...]
    registry: ContainerStep
    nginx: ContainerStep
    token: ContainerStep
    build_token: str  # the token service image to build, or ""
    reload: tuple[str, ...]  # why nginx reloads; () for no reload
    record: dict[str, Any] | None  # the new deploy record, or None when it stands
    # Legacy configs to stage by digest: (path, name); then the configs no deploy
    # record names any more, to remove.
    stage: tuple[tuple[str, str], ...] = ()
    prune: tuple[str, ...] = ()
    # The host's own line for the registry's name in /etc/hosts, to write; "" when it stands.
    self_name: str = ""
    # The tag the proof pushes (regkit/probe:<tag>): one per host.
    probe_tag: str = PROBE_TAG
    ship: tuple[str, ...] = ()
    # The mirror (registry.mirror), or None; and whether a mirror the inventory no
    # longer names is removed.
    mirror: ContainerStep | None = None
    remove_mirror: bool = False
    # nginx's maintenance flags left up by a gc or a migration that did not finish:
    # lowered, so pushes work.
    clear_flags: tuple[str, ...] = ()

    @property
    def changes(self) -> bool:
        return bool(
            self.package == "install"
            or self.files
            or self.pull
            or self.ship
            or self.build
            or self.build_token
            or self.token.why
            or self.create_networks
            or self.registry.why
            or self.nginx.why
            or self.reload
            or self.stage
            or self.prune
            or self.self_name
            or (self.mirror is not None and self.mirror.why)
            or self.remove_mirror
            or self.clear_flags
        )

    @property
    def test_nginx(self) -> bool:
        """``nginx -t`` in the new image first, whenever the proxy is recreated."""
        return bool(self.nginx.why)

    @property
    def digest(self) -> str:
        """A short hash of the plan: the dry run and the real run of the same facts agree."""
        value = asdict(self)
        for change in value["files"]:
            change["upload"]["content"] = sha256(change["upload"]["content"])
        return sha256(json.dumps(value, sort_keys=True, default=str).encode())[:12]


NETWORK_OPTIONS = {NETWORK: (), BACKEND: BACKEND_OPTIONS}


def recreated(plan: DeployPlan) -> list[str]:
    """The containers the plan (re)creates or starts: a host that stops serving a while."""
    steps = (plan.token, plan.registry, plan.mirror, plan.nginx)
    return [step.spec.name for step in steps if step is not None and step.why]


def missing_images(
    inv: Inventory, facts: DeployFacts, build: bool, build_token: bool
) -> tuple[str, ...]:
    """The pinned images the host lacks and this deploy needs: the registry's, and the
    bases of the images it builds."""
    images = inv.registry.images
    needed = (images.registry, *([images.nginx] * build), *([images.token] * build_token))
    return tuple(ref for ref in needed if ref not in facts.images)


def shippable(alias: str, refs: tuple[str, ...]) -> tuple[str, ...]:
    """``refs``, when ``docker load`` can restore them all: it restores tags, not digests."""
    pinned = [ref for ref in refs if "@" in ref]
    if pinned:
        raise RemoteError(
            f"{alias}: {pinned[0]} is pinned by digest, and docker load restores tags, not "
            "digests; pin it by tag in registry.images to ship it with --ship-images"
        )
    return refs


def plan(
    inv: Inventory, alias: str, files: list[Upload], facts: DeployFacts, ship: bool = False
) -> DeployPlan:
    """What deploying ``files`` (and the containers they imply) to this host changes;
    with ``ship``, the images it lacks are shipped to it, not pulled."""
    summary = preflight(inv, alias, facts)
    tag = nginx_tag(files)
    image = inv.registry.images.registry
    changes = tuple(
        FileChange(f, "new" if f.path not in facts.files else "content or mode differs")
        for f in files
        if facts.files.get(f.path) != f.fact
    )
    config, readonly = registry_configs(files)
    registry = registry_spec(inv, config.digest)
    registry_why = container_change(
        facts.containers.get(REGISTRY), registry, facts.images.get(image, "")
    )
    proxy = nginx_spec(inv, tag)
    nginx_why = container_change(facts.containers.get(NGINX), proxy, facts.images.get(tag, ""))
    tokens = token_spec(token_tag(files))
    token_why = container_change(
        facts.containers.get(TOKEND), tokens, facts.images.get(tokens.image, "")
    )
    # The token service reads a new password file at the next login: no reload.
    reload: list[str] = []
    if not nginx_why and any(c.upload.path.startswith(TLS_DIR) for c in changes):
        reload.append("certificate changed")
    # nginx keeps the registry's and the token service's addresses for 10 s (resolver
    # valid=10s): a reload makes it look a recreated one up at once.
    if not nginx_why and registry_why:
        reload.append("registry recreated")
    if not nginx_why and token_why:
        reload.append("token service recreated")
    mirror = mirror_step(inv, files, facts)
    if not nginx_why and mirror is not None and mirror.why:
        reload.append("mirror recreated")
    package = package_state(facts)
    now = {
        "registry": image,
        "nginx": tag,
        "config": config.digest[:16],
        "readonly_config": readonly.digest[:16],
        "passwords": PASSWORDS,
    }
    legacy = legacy_configs(facts)
    record = deploy_record(facts.deployed, now, legacy)
    build = tag not in facts.images
    build_token = tokens.image not in facts.images
    missing = missing_images(inv, facts, build, build_token)
    return DeployPlan(
        preflight=summary,
        warnings=tuple(w for w in (forwarding_warning(facts), other_name_warning(inv, facts)) if w),
        package=package,
        files=changes,
        file_count=len(files),
        pull=() if ship else missing,
        ship=shippable(alias, missing) if ship else (),
        build=tag if build else "",
        create_networks=tuple(n for n in NETWORK_OPTIONS if n not in facts.networks),
        registry=ContainerStep(registry, registry_why),
        nginx=ContainerStep(proxy, nginx_why),
        token=ContainerStep(tokens, token_why),
        build_token=tokens.image if build_token else "",
        reload=tuple(reload),
        record=record,
        stage=tuple(
            (path, legacy[key])
            for path, key in zip(LEGACY_CONFIG_FILES, ("config", "readonly_config"), strict=True)
            if legacy and legacy[key] not in facts.configs
        ),
        prune=(
            *stale_configs(facts, record or facts.deployed),
            *stale_mirror_configs(files, facts),
        ),
        self_name=self_name_change(inv, facts),
        probe_tag=probe_tag(alias),
        mirror=mirror,
        remove_mirror=mirror is None and MIRROR in facts.containers,
        clear_flags=tuple(f for f in MAINTENANCE_FLAGS if f in facts.files),
    )


def stale_mirror_configs(files: list[Upload], facts: DeployFacts) -> tuple[str, ...]:
    """Staged mirror configs but the one this deploy runs (all of them without a mirror):
    removed once the deploy has proved itself."""
    config = mirror_config(files)
    current = mirror_config_dir(config.digest) if config else ""
    stale = (f"{MIRROR_CONFIG_DIR}/{name}" for name in facts.mirror_configs)
    return tuple(path for path in stale if path != current)


def mirror_step(inv: Inventory, files: list[Upload], facts: DeployFacts) -> ContainerStep | None:
    """The mirror container and why it changes, or None without ``registry.mirror``."""
    config = mirror_config(files)
    spec = mirror_spec(inv, config.digest) if config else None
    if spec is None:
        return None
    why = container_change(facts.containers.get(MIRROR), spec, facts.images.get(spec.image, ""))
    return ContainerStep(spec, why)


RECORD_KEYS = ("registry", "nginx", "config", "readonly_config", "passwords")
# Who checks passwords in what a deploy runs: the token service (#22). A deploy record
# without it ran an nginx that checked them itself, which rollback cannot return to.
PASSWORDS = "token-service"


def legacy_configs(facts: DeployFacts) -> dict[str, str]:
    """The staged names of the configs regkit kept before staging, when the deploy record
    (written then) has none: the deploy before this one ran them."""
    digests = [facts.files.get(path, "").split(" ")[0] for path in LEGACY_CONFIG_FILES]
    if "config" in facts.deployed or not all(digests):
        return {}
    return {"config": digests[0][:16], "readonly_config": digests[1][:16]}


def deploy_record(
    before: dict[str, Any], now: dict[str, str], legacy: dict[str, str] | None = None
) -> dict[str, Any] | None:
    """The deploy record after this deploy (what runs, and what ran before it), or None
    when it already says so. ``legacy`` names the configs a record from before staging
    lacks (see :func:`legacy_configs`)."""
    known = {**(legacy or {}), **before}
    current = {key: known.get(key) for key in RECORD_KEYS}
    if current == now:
        if all(key in before for key in RECORD_KEYS):
            return None
        # The same deploy, now recorded with its staged configs.
        return {**now, "previous": before.get("previous")}
    ran = current["registry"] and current["nginx"]
    return {**now, "previous": current if ran else before.get("previous")}


def stale_configs(facts: DeployFacts, record: dict[str, Any]) -> tuple[str, ...]:
    """Staged configs that neither what runs nor what ran before uses, and the legacy
    ones: removed once the deploy has proved itself."""
    previous = mapping(record.get("previous"))
    keep = {
        name
        for source in (record, previous)
        for key in ("config", "readonly_config")
        if (name := source.get(key))
    }
    stale = [f"{REGISTRY_CONFIGS}/{name}" for name in facts.configs if name not in keep]
    stale = [path for path in stale if path not in LEGACY_CONFIGS]
    return (*stale, *facts.legacy)
