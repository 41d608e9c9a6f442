"""The undeploy plan: what of regkit is on a registry host, and what goes (pure).

The containers, networks, the images built on the host (proxy, token service) and
the host's own line for the registry's name in /etc/hosts always go; the registry's
data,
/etc/regkit and Docker's trust of the registry only with ``--purge-data``.
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


def purged_paths(inv: Inventory) -> tuple[str, ...]:
    """What ``--purge-data`` deletes: every pushed image (and the mirror's cache),
    /etc/regkit, Docker's trust."""
    reg = inv.registry
    cache = (reg.mirror.data_dir,) if reg.mirror else ()
    return (reg.data_dir, *cache, REMOTE_DIR, str(PurePosixPath(reg.certs_d).parent))


def facts_script(inv: Inventory) -> str:
    return scripts.script(
        "undeploy-facts",
        containers=CONTAINERS,
        networks=[NETWORK, BACKEND],
        built_images=[NGINX_IMAGE, TOKEND_IMAGE],
        # By reference, not ID: untagging an image that a later build was made FROM
        # works where deleting it by ID is refused; docker rmi then prunes what is left.
        image_format="{{.Repository}}:{{.Tag}}",
        paths=purged_paths(inv),
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

    def commands(self) -> list[tuple[str, str]]:
        """(what, command) in order: containers, then networks, images, purged paths."""
        steps = [
            ("removing containers", ("docker", "rm", "-f"), self.containers),
            ("removing networks", ("docker", "network", "rm"), self.networks),
            ("removing the images built here", ("docker", "rmi"), self.images),
            ("purging data", ("rm", "-rf"), self.purge),
        ]
        out = [(what, commands.join(*verb, *args)) for what, verb, args in steps if args]
        if self.self_name:
            out.append((f"removing the registry's name from {HOSTS_FILE}", self_name_script("")))
        return out


def plan(inv: Inventory, facts: UndeployFacts, purge_data: bool) -> UndeployPlan:
    wanted = purged_paths(inv)
    present = tuple(p for p in wanted if p in facts.paths)
    return UndeployPlan(
        containers=tuple(c for c in CONTAINERS if c in facts.containers),
        networks=tuple(n for n in (NETWORK, BACKEND) if n in facts.networks),
        images=facts.images,
        purge=present if purge_data else (),
        kept=() if purge_data else present,
        self_name=facts.self_name,
    )
