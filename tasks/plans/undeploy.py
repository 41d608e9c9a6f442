"""The undeploy plan: what of regkit is on a registry host, and what goes (pure).

The containers, networks, the images built on the host (proxy, token service) and
the deploy's probe image, and the host's own line for the registry's name in
/etc/hosts always go; so do the configuration and the secrets (/etc/regkit: the
server key, the token key, the probe's password; Docker's trust of the registry)
unless ``--keep-config``. The registry's data (and the mirror's cache) go only with
``--purge-data``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from tasks import commands, scripts
from tasks.facts import parse_values
from tasks.inventory import Inventory
from tasks.layout import (
    BACKEND,
    HOSTS_FILE,
    MIRROR,
    NETWORK,
    NGINX,
    NGINX_IMAGE,
    PROBE_REPO,
    REGISTRY,
    REMOTE_DIR,
    SELF_NAME_MARK,
    TOKEND,
    TOKEND_IMAGE,
)
from tasks.plans.deploy_steps import self_name_script

CONTAINERS = (NGINX, REGISTRY, TOKEND, MIRROR)


@dataclass(frozen=True)
class UndeployFacts:
    containers: tuple[str, ...]
    networks: tuple[str, ...]
    images: tuple[str, ...]
    paths: tuple[str, ...]
    self_name: bool = False


def data_paths(inv: Inventory) -> tuple[str, ...]:
    """What ``--purge-data`` deletes: every pushed image, and the mirror's cache."""
    reg = inv.registry
    return (reg.data_dir, *((reg.mirror.data_dir,) if reg.mirror else ()))


def config_paths(inv: Inventory) -> tuple[str, ...]:
    """What undeploy deletes unless ``--keep-config``: /etc/regkit, Docker's trust."""
    return (REMOTE_DIR, str(PurePosixPath(inv.registry.certs_d).parent))


def facts_script(inv: Inventory) -> str:
    return scripts.script(
        "undeploy-facts",
        containers=CONTAINERS,
        networks=[NETWORK, BACKEND],
        built_images=[NGINX_IMAGE, TOKEND_IMAGE, f"{inv.registry.address}/{PROBE_REPO}"],
        # By reference, not ID: untagging an image that a later build was made FROM
        # works where deleting it by ID is refused; docker rmi then prunes what is left.
        image_format="{{.Repository}}:{{.Tag}}",
        paths=[*data_paths(inv), *config_paths(inv)],
        hosts=HOSTS_FILE,
        mark=SELF_NAME_MARK,
    )


def parse_facts(output: str) -> UndeployFacts:
    values = parse_values(output)

    def present(prefix: str) -> tuple[str, ...]:
        return tuple(key[len(prefix) :] for key in values if key.startswith(prefix))

    return UndeployFacts(
        containers=present("container:"),
        networks=present("network:"),
        images=tuple(values.get("images", "").split()),
        paths=present("path:"),
        self_name=values.get("self_name") == "yes",
    )


@dataclass(frozen=True)
class UndeployPlan:
    containers: tuple[str, ...]
    networks: tuple[str, ...]
    images: tuple[str, ...]
    purge: tuple[str, ...]
    kept: tuple[str, ...]
    self_name: bool = False
    config: tuple[str, ...] = ()

    def commands(self) -> list[tuple[str, str]]:
        """(what, command) in order: containers, then networks, images, configuration,
        purged data."""
        steps = [
            ("removing containers", ("docker", "rm", "-f"), self.containers),
            ("removing networks", ("docker", "network", "rm"), self.networks),
            ("removing the images built here", ("docker", "rmi"), self.images),
            ("removing configuration and secrets", ("rm", "-rf"), self.config),
            ("purging data", ("rm", "-rf"), self.purge),
        ]
        out = [(what, commands.join(*verb, *args)) for what, verb, args in steps if args]
        if self.self_name:
            out.append((f"removing the registry's name from {HOSTS_FILE}", self_name_script("")))
        return out


def plan(
    inv: Inventory, facts: UndeployFacts, purge_data: bool, keep_config: bool = False
) -> UndeployPlan:
    data = tuple(p for p in data_paths(inv) if p in facts.paths)
    config = tuple(p for p in config_paths(inv) if p in facts.paths)
    return UndeployPlan(
        containers=tuple(c for c in CONTAINERS if c in facts.containers),
        networks=tuple(n for n in (NETWORK, BACKEND) if n in facts.networks),
        images=facts.images,
        purge=data if purge_data else (),
        kept=(*(() if purge_data else data), *(config if keep_config else ())),
        self_name=facts.self_name,
        config=() if keep_config else config,
    )
