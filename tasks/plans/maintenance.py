"""Day-two plans on a registry host: which configuration ``fab gc`` switches between, and
what ``fab rollback`` returns to (pure; unit-tested).

Both read the deploy record (``/etc/regkit/deployed.json``): what the last deploy
that proved itself runs (images and staged configs, see :mod:`tasks.layout`) and
what ran before it. A configuration is staged by its digest, so the registry
always goes back with the configuration it ran with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasks import scripts
from tasks.errors import RegkitError
from tasks.facts import json_object, mapping, parse_values
from tasks.inventory import Inventory
from tasks.layout import CONFIG_LABEL, DEPLOYED, NGINX, REGISTRY, REGISTRY_CONFIGS
from tasks.plans.deploy import PASSWORDS
from tasks.wanted import RunSpec, nginx_spec, registry_spec


@dataclass
class HostState:
    """What runs on a registry host, and its deploy record."""

    registry_image: str = ""
    registry_config: str = ""
    nginx_image: str = ""
    configs: tuple[str, ...] = ()
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def running(self) -> dict[str, str]:
        return {
            "registry": self.registry_image,
            "nginx": self.nginx_image,
            "config": self.registry_config,
        }


def facts_script() -> str:
    return scripts.script(
        "maintenance-facts",
        registry=REGISTRY,
        nginx=NGINX,
        registry_format=f'{{{{.Config.Image}}}}|{{{{index .Config.Labels "{CONFIG_LABEL}"}}}}',
        nginx_format="{{.Config.Image}}",
        deployed=DEPLOYED,
        configs=REGISTRY_CONFIGS,
    )


def parse_facts(output: str) -> HostState:
    values = parse_values(output)
    image, _, config = values.get("registry", "").partition("|")
    return HostState(
        registry_image=image,
        registry_config="" if config == "<no value>" else config,
        nginx_image=values.get("nginx", ""),
        configs=tuple(values.get("configs", "").split()),
        record=json_object(values.get("deployed", "")),
    )


def _deploy(record: dict[str, Any]) -> dict[str, str]:
    return {key: str(record.get(key) or "") for key in ("registry", "nginx", "config")}


def gc_configs(alias: str, state: HostState) -> tuple[str, str]:
    """(the running config, its read-only variant): what ``fab gc`` switches between."""
    running = (state.registry_image, state.registry_config)
    for deployed in (state.record, mapping(state.record.get("previous"))):
        if (deployed.get("registry"), deployed.get("config")) == running and deployed.get(
            "readonly_config"
        ):
            return deployed["config"], deployed["readonly_config"]
    raise RegkitError(
        f"{alias}: the registry runs no configuration the deploy record names "
        f"({DEPLOYED}); run 'fab -H {alias} deploy' first"
    )


@dataclass(frozen=True)
class RollbackPlan:
    """Where rollback goes, why, and how."""

    target: dict[str, str]
    why: str
    registry: RunSpec | None  # None: the registry stays as it is
    nginx: RunSpec | None  # None: the proxy stays (and reloads, if the registry changed)
    record: dict[str, Any]


def rollback_plan(inv: Inventory, alias: str, state: HostState) -> RollbackPlan:
    """Back to what the deploy record names as running, if the host does not run it (a
    deploy or a rollback cut short); else to the deploy before it.

    The apply step writes the new record before it touches a container, so a rollback
    cut short and run again finishes going back rather than forward.
    """
    record = state.record
    current, previous = _deploy(record), mapping(record.get("previous"))
    if current["registry"] and current != state.running:
        target, why = record, "the host does not run what its deploy record names"
        new_record = record
    elif previous.get("registry") and previous.get("nginx"):
        target, why = previous, "the deploy before the last one"
        new_record = {**previous, "previous": {k: v for k, v in record.items() if k != "previous"}}
    else:
        raise RegkitError(
            f"{alias}: no previous deploy recorded in {DEPLOYED}; nothing to roll back to"
        )
    goal = _deploy(target)
    if not goal["config"]:
        raise RegkitError(
            f"{alias}: the deploy to return to predates staged configs, so its configuration "
            "is not on the host; set registry.images in the inventory back and deploy"
        )
    if goal["config"] not in state.configs:
        raise RegkitError(
            f"{alias}: the configuration {goal['config']} is no longer in {REGISTRY_CONFIGS}; "
            "nothing to roll back to"
        )
    if target.get("passwords") != PASSWORDS:
        raise RegkitError(
            f"{alias}: the deploy to return to ran an nginx that checked passwords itself, "
            "which the token service of this regkit does not work with; set "
            "registry.images in the inventory back and deploy"
        )
    same_registry = (goal["registry"], goal["config"]) == (
        state.registry_image,
        state.registry_config,
    )
    registry = None if same_registry else registry_spec(inv, goal["config"], goal["registry"])
    nginx = None if goal["nginx"] == state.nginx_image else nginx_spec(inv, goal["nginx"])
    return RollbackPlan(goal, why, registry, nginx, new_record)
