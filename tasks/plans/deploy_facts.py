"""A registry host's facts, as deploy reads them: one script, one parser.

The script (``templates/sh/deploy-facts.sh.j2``) prints one ``key<TAB>value``
line per fact and changes nothing; the parser turns them into
:class:`DeployFacts`, which :mod:`tasks.plans.deploy` plans from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasks import scripts
from tasks.facts import json_object
from tasks.inventory import Inventory
from tasks.layout import (
    BACKEND,
    DEPLOYED,
    HOSTS_FILE,
    INHIBIT_IPV4,
    LEGACY_CONFIG_FILES,
    LEGACY_CONFIGS,
    MAINTENANCE_FLAGS,
    MIRROR,
    MIRROR_CONFIG_DIR,
    NETWORK,
    NGINX,
    REGISTRY,
    REGISTRY_CONFIGS,
    SELF_NAME_MARK,
    SPEC_LABEL,
    TOKEND,
)
from tasks.remote.upload import Upload
from tasks.wanted import nginx_tag, token_tag

NETWORK_FORMAT = f'{{{{.Name}}}} {{{{.Internal}}}} {{{{index .Options "{INHIBIT_IPV4}"}}}}'
# What docker network inspect says of BACKEND when it is as BACKEND_OPTIONS made it.
BACKEND_WANTED = "true true"
CONTAINER_FORMAT = "|".join(
    (
        "{{.Name}}",
        "{{.Image}}",
        f'{{{{index .Config.Labels "{SPEC_LABEL}"}}}}',
        "{{.State.Running}}",
    )
)
IMAGE_FORMAT = "{{json .RepoTags}}{{json .RepoDigests}} {{.Id}}"


@dataclass(frozen=True)
class Container:
    """What ``docker inspect`` says of a container."""

    image_id: str
    spec: str
    running: bool


@dataclass
class DeployFacts:
    """Everything deploy needs to know about a host, read in one command."""

    os: str = "unknown"
    apt: bool = False
    apache2_utils: bool = False
    # "yes", "no <uri>" when apt could not reach its source, "" when not asked.
    apt_source: str = ""
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
    # What is in the folder of staged registry configs (names), and the legacy paths.
    configs: tuple[str, ...] = ()
    legacy: tuple[str, ...] = ()
    # What is in the folder of staged mirror configs (names).
    mirror_configs: tuple[str, ...] = ()
    # The line of /etc/hosts marked as regkit's (the host naming itself), or "".
    self_name: str = ""
    # The first line of /etc/hosts that names the registry's domain (what a lookup
    # finds), and the first such line that is not regkit's; "" for none.
    first_name: str = ""
    other_name: str = ""


def facts_script(inv: Inventory, files: list[Upload]) -> str:
    """The script that reads a deploy's facts: the host, its files, containers, images."""
    reg = inv.registry
    return scripts.script(
        "deploy-facts",
        data_dir=reg.data_dir,
        port=reg.port,
        networks=[NETWORK, BACKEND],
        network_format=NETWORK_FORMAT,
        deployed=DEPLOYED,
        configs=REGISTRY_CONFIGS,
        mirror_configs=MIRROR_CONFIG_DIR,
        legacy=LEGACY_CONFIGS,
        hosts=HOSTS_FILE,
        mark=SELF_NAME_MARK,
        domain=reg.domain,
        paths=[*(f.path for f in files), *LEGACY_CONFIG_FILES, *MAINTENANCE_FLAGS],
        containers=[REGISTRY, NGINX, TOKEND, MIRROR],
        container_format=CONTAINER_FORMAT,
        images=[
            reg.images.registry,
            reg.images.nginx,
            reg.images.token,
            nginx_tag(files),
            token_tag(files),
        ],
        image_format=IMAGE_FORMAT,
    )


_FLAGS = ("apt", "apache2_utils")
_TEXT = (
    "os",
    "docker",
    "port_holder",
    "forwarding",
    "self_name",
    "first_name",
    "other_name",
    "apt_source",
)
_PREFIXED = {"file:": "files", "img:": "images", "net:": "networks"}


def parse_facts(output: str) -> DeployFacts:
    """Facts from the script's output."""
    facts = DeployFacts()
    for line in output.splitlines():
        key, _, value = line.partition("\t")
        prefix = key[: key.find(":") + 1]
        if key in _FLAGS:
            setattr(facts, key, value == "yes")
        elif key in _TEXT:
            setattr(facts, key, value)
        elif key == "disk_free_kb":
            facts.disk_free_kb = int(value) if value.isdigit() else 0
        elif prefix in _PREFIXED:
            getattr(facts, _PREFIXED[prefix])[key[len(prefix) :]] = value
        elif prefix == "ctr:":
            image_id, spec, running = (value.split("|") + [""] * 3)[:3]
            spec = "" if spec == "<no value>" else spec
            facts.containers[key[4:]] = Container(image_id, spec, running == "true")
        elif key == "deployed":
            facts.deployed = json_object(value)
        elif key in ("configs", "legacy", "mirror_configs"):
            setattr(facts, key, tuple(value.split()))
    return facts
