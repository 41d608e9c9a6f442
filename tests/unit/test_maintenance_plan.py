"""gc and rollback plans from a registry host's state: which staged configuration the
registry switches to, and what rollback returns to."""

from __future__ import annotations

import json

import pytest

from tasks.errors import RegkitError
from tasks.inventory import Inventory
from tasks.layout import config_dir
from tasks.plans import maintenance as planner
from tasks.plans.maintenance import HostState

OLD = {"registry": "registry:2.8.2", "nginx": "regkit-nginx:old", "config": "a" * 16}
NEW = {"registry": "registry:2.8.3", "nginx": "regkit-nginx:new", "config": "b" * 16}
TOKEND = {"passwords": "token-service"}  # the token service checks passwords (#22)
RECORD = {
    **NEW, "readonly_config": "c" * 16, **TOKEND,
    "previous": {**OLD, "readonly_config": "d" * 16, **TOKEND},
}  # fmt: skip
ALL_CONFIGS = ("a" * 16, "b" * 16, "c" * 16, "d" * 16)


def running(deploy: dict[str, str], record: dict[str, object] = RECORD) -> HostState:
    return HostState(
        registry_image=deploy["registry"],
        registry_config=deploy["config"],
        nginx_image=deploy["nginx"],
        configs=ALL_CONFIGS,
        record=dict(record),
    )


def test_parse_facts_reads_what_runs_and_the_record() -> None:
    output = "\n".join(
        [
            f"registry\tregistry:2.8.3|{'b' * 16}",
            "nginx\tregkit-nginx:new",
            f"deployed\t{json.dumps(RECORD)}",
            f"configs\t{' '.join(ALL_CONFIGS)} ",
        ]
    )
    assert planner.parse_facts(output) == running(NEW)
    bare = planner.parse_facts("registry\tregistry:2|<no value>\ndeployed\tnot json")
    assert (bare.registry_config, bare.record) == ("", {})


def test_rollback_returns_to_the_previous_images_with_their_config(pki_inv: Inventory) -> None:
    plan = planner.rollback_plan(pki_inv, "regbox", running(NEW))
    assert plan.target == OLD and plan.why == "the deploy before the last one"
    assert plan.registry is not None and plan.registry.image == "registry:2.8.2"
    assert f"{config_dir('a' * 16)}:/etc/docker/registry:ro" in plan.registry.args
    assert plan.nginx is not None and plan.nginx.image == "regkit-nginx:old"
    assert plan.record["config"] == "a" * 16
    assert plan.record["previous"] == {**NEW, "readonly_config": "c" * 16, **TOKEND}


def test_rollback_after_a_deploy_cut_short_returns_to_the_last_proven_one(
    pki_inv: Inventory,
) -> None:
    half = {**NEW, "nginx": "regkit-nginx:half-way"}
    plan = planner.rollback_plan(pki_inv, "regbox", running(half))
    assert plan.target == NEW
    assert plan.why == "the host does not run what its deploy record names"
    assert plan.registry is None
    assert plan.nginx is not None and plan.nginx.image == "regkit-nginx:new"
    assert plan.record == RECORD


@pytest.mark.parametrize(
    ("record", "configs", "message"),
    [
        ({**NEW, "readonly_config": "c" * 16}, ALL_CONFIGS, "no previous deploy recorded"),
        ({**RECORD, "previous": {k: OLD[k] for k in ("registry", "nginx")}}, ALL_CONFIGS,
         "predates staged configs"),
        ({k: v for k, v in RECORD.items() if k != "readonly_config"} | {"config": None},
         ALL_CONFIGS, "predates staged configs"),
        ({**RECORD, "previous": "not a deploy"}, ALL_CONFIGS, "no previous deploy recorded"),
        (RECORD, ("b" * 16,), "is no longer in /etc/regkit/registry"),
        # A deploy from before the token service checked passwords (#22).
        ({**RECORD, "previous": {**OLD, "readonly_config": "d" * 16}}, ALL_CONFIGS,
         "ran an nginx that checked passwords itself"),
    ],
)  # fmt: skip
def test_rollback_refuses_what_it_cannot_return_to(
    pki_inv: Inventory, record: dict[str, object], configs: tuple[str, ...], message: str
) -> None:
    state = running(NEW, record)
    state.configs = configs
    with pytest.raises(RegkitError, match=message):
        planner.rollback_plan(pki_inv, "regbox", state)


def test_gc_switches_between_the_running_config_and_its_read_only_variant() -> None:
    assert planner.gc_configs("regbox", running(NEW)) == ("b" * 16, "c" * 16)
    assert planner.gc_configs("regbox", running(OLD)) == ("a" * 16, "d" * 16)
    with pytest.raises(RegkitError, match="runs no configuration the deploy record names"):
        planner.gc_configs("regbox", running({**NEW, "config": "e" * 16}))


def test_a_rollback_cut_short_and_run_again_finishes_going_back(pki_inv: Inventory) -> None:
    """The record is written first: with the host half-way (old registry, new proxy) it
    names the deploy rollback returns to, and a second run goes there too."""
    first = planner.rollback_plan(pki_inv, "regbox", running(NEW))
    half_way = {**OLD, "nginx": NEW["nginx"]}
    again = planner.rollback_plan(pki_inv, "regbox", running(half_way, first.record))
    assert again.target == OLD and again.registry is None
    assert again.nginx is not None and again.nginx.image == OLD["nginx"]


def test_gc_needs_only_the_registry_to_match_the_record() -> None:
    state = running({**NEW, "nginx": "regkit-nginx:half-way"})
    assert planner.gc_configs("regbox", state) == ("b" * 16, "c" * 16)
