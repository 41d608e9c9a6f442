"""The undeploy plan: what of regkit is on a host, and what goes."""

from __future__ import annotations

from tasks.inventory import Inventory
from tasks.plans import undeploy as planner

DEPLOYED = "\n".join(
    [
        "container:regkit-nginx\tyes",
        "container:regkit-registry\tyes",
        "container:regkit-token\tyes",
        "network:regkit\tyes",
        "network:regkit-backend\tyes",
        "images\t regkit-nginx:aa regkit-nginx:bb  regkit-token:cc "
        "registry.unit.test/regkit/probe:deploy-regbox ",
        "path:/var/lib/regkit/registry\tyes",
        "path:/etc/regkit\tyes",
        "path:/etc/docker/certs.d/registry.unit.test\tyes",
    ]
)


def test_undeploy_removes_containers_images_and_secrets_and_keeps_the_data(
    inv: Inventory,
) -> None:
    plan = planner.plan(inv, planner.parse_facts(DEPLOYED), purge_data=False)
    assert plan.commands() == [
        ("removing containers", "docker rm -f regkit-nginx regkit-registry regkit-token"),
        ("removing networks", "docker network rm regkit regkit-backend"),
        (
            "removing the images built here",
            "docker rmi regkit-nginx:aa regkit-nginx:bb regkit-token:cc "
            "registry.unit.test/regkit/probe:deploy-regbox",
        ),
        (
            "removing configuration and secrets",
            "rm -rf /etc/regkit /etc/docker/certs.d/registry.unit.test",
        ),
    ]
    assert plan.kept == ("/var/lib/regkit/registry",)


def test_keep_config_keeps_the_configuration_and_secrets(inv: Inventory) -> None:
    plan = planner.plan(inv, planner.parse_facts(DEPLOYED), purge_data=False, keep_config=True)
    assert [what for what, _ in plan.commands()] == [
        "removing containers",
        "removing networks",
        "removing the images built here",
    ]
    assert plan.kept == (
        "/var/lib/regkit/registry",
        "/etc/regkit",
        "/etc/docker/certs.d/registry.unit.test",
    )


def test_purge_data_deletes_the_data_too(inv: Inventory) -> None:
    plan = planner.plan(inv, planner.parse_facts(DEPLOYED), purge_data=True)
    assert plan.commands()[-1] == ("purging data", "rm -rf /var/lib/regkit/registry")
    assert plan.kept == ()


def test_a_host_without_regkit_plans_nothing(inv: Inventory) -> None:
    plan = planner.plan(inv, planner.parse_facts("images\t"), purge_data=True)
    assert plan.commands() == []


def test_the_hosts_own_name_line_goes_with_the_containers(inv: Inventory) -> None:
    plan = planner.plan(inv, planner.parse_facts(DEPLOYED + "\nself_name\tyes"), purge_data=False)
    what, script = plan.commands()[-1]
    assert what == "removing the registry's name from /etc/hosts"
    assert "grep -vF '# regkit: this host serves the registry itself' /etc/hosts" in script
    assert "printf" not in script
