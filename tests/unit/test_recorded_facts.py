"""Each task's plan, built from facts recorded on the lab's real hosts (tests/unit/facts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks import certificates, pki, users, wanted
from tasks.errors import RegkitError, RemoteError
from tasks.inventory import Inventory
from tasks.plans import accounts, deploy_facts, maintenance, trust, undeploy
from tasks.plans import deploy as deploy_plan
from tasks.remote.upload import Upload

FACTS = Path(__file__).parent / "facts"
CONFIGS = ("1a2b817e5d99ae6d", "25058420647984c5", "d266053b79837738", "fe31b4031bcdec98")


def recorded(name: str) -> str:
    return (FACTS / name).read_text()


@pytest.fixture
def files(pki_inv: Inventory) -> list[Upload]:
    users.set_password(pki_inv, "alice", "correct horse battery")
    users.ensure_probe_credential(pki_inv)
    return wanted.registry_files(pki_inv)


def test_deploy_to_a_docker_host_that_never_ran_regkit(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    facts = deploy_facts.parse_facts(recorded("deploy-facts-client1.txt"))
    plan = deploy_plan.plan(pki_inv, "client1", files, facts)
    assert plan.preflight.startswith("debian, docker 20.10.24+dfsg1, ")
    assert plan.warnings[0].startswith("this host forwards packets from other hosts")
    assert plan.package == "install"
    assert len(plan.files) == len(files) and {c.why for c in plan.files} == {"new"}
    images = pki_inv.registry.images
    assert plan.pull == ("registry:2.8.3", images.nginx, images.token)
    assert plan.build == wanted.nginx_tag(files)
    assert plan.create_networks == ("regkit", "regkit-backend")
    assert (plan.registry.why, plan.nginx.why) == ("created", "created")
    assert plan.prune == ()


def test_deploy_over_a_deployed_host_keeps_what_ran_before(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    facts = deploy_facts.parse_facts(recorded("deploy-facts-regbox.txt"))
    assert set(facts.containers) == {"regkit-registry", "regkit-nginx"}
    assert all(c.running and len(c.spec) == 16 for c in facts.containers.values())
    assert facts.networks["regkit-backend"] == "true true"
    assert facts.configs == CONFIGS
    plan = deploy_plan.plan(pki_inv, "regbox", files, facts)
    assert plan.preflight.endswith("port 443 ours")
    assert plan.create_networks == ()
    assert plan.registry.why == "recreated: its configuration changed"
    assert plan.record is not None
    assert plan.record["previous"]["config"] == "1a2b817e5d99ae6d"
    # What ran before keeps its configs (a rollback can return to them); the deploy
    # before that one loses its own.
    assert plan.prune == (
        "/etc/regkit/registry/d266053b79837738",
        "/etc/regkit/registry/fe31b4031bcdec98",
    )


@pytest.mark.parametrize(("alias", "flavor"), [("client1", "debian"), ("b2d", "boot2docker")])
def test_trust_a_new_ca_on_recorded_hosts(pki_inv: Inventory, alias: str, flavor: str) -> None:
    facts = trust.parse_facts(recorded(f"trust-facts-{alias}.txt"))
    assert trust.detect_flavor(None, facts) == flavor
    pems = [certificates.cert_pem(ca) for ca in pki.trusted_cas(pki_inv)]
    plan = trust.plan(pki_inv, flavor, facts, pems)
    assert plan.system_changed and {u.content for u in plan.uploads} == {pems[0]}
    assert plan.restart_docker


@pytest.mark.parametrize(("alias", "flavor"), [("client1", "debian"), ("b2d", "boot2docker")])
def test_untrust_on_recorded_hosts_removes_both_files_and_restarts_docker(
    pki_inv: Inventory, alias: str, flavor: str
) -> None:
    facts = trust.parse_facts(recorded(f"trust-facts-{alias}.txt"))
    lab = pki_inv.model_copy(
        update={"registry": pki_inv.registry.model_copy(update={"domain": "registry.lab.test"})}
    )
    plan = trust.untrust_plan(lab, flavor, facts)
    assert set(plan.remove) == {
        "/etc/docker/certs.d/registry.lab.test/ca.crt",
        trust.store_path(lab, flavor),
    }
    assert plan.system_changed and plan.restart_docker


def test_new_account_files_go_to_a_host_whose_proxy_and_token_service_run(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    facts = accounts.parse_facts(recorded("password-facts-regbox.txt"))
    assert facts.deployed and facts.running == {"regkit-nginx", "regkit-token"}
    wanted_files = [wanted.password_file(pki_inv), wanted.rights_file(pki_inv)]
    plan = accounts.plan("regbox", wanted_files, facts)
    # The recorded host has another password file (its rights name the same users).
    assert not plan.skip and wanted_files[0] in plan.uploads
    facts.files.update({f.path: f.fact for f in wanted_files})
    assert accounts.plan("regbox", wanted_files, facts).uploads == ()
    stopped = accounts.AccountFacts(facts.files, True, frozenset({"regkit-nginx"}))
    with pytest.raises(RemoteError, match="regbox: regkit-token not running here; run 'fab"):
        accounts.plan("regbox", wanted_files, stopped)


def test_account_changes_skip_a_host_never_deployed(
    pki_inv: Inventory, files: list[Upload]
) -> None:
    facts = accounts.parse_facts(recorded("password-facts-client1.txt"))
    plan = accounts.plan("client1", [wanted.password_file(pki_inv)], facts)
    assert (
        plan.uploads == () and plan.skip == "never deployed here: goes live with the first deploy"
    )


def test_rollback_and_gc_on_the_recorded_registry_host(pki_inv: Inventory) -> None:
    state = maintenance.parse_facts(recorded("maintenance-facts-regbox.txt"))
    assert state.running == {
        "registry": "regkit-lab/registry:2.8.2",
        "nginx": "regkit-nginx:fdaa815cc86a7543",
        "config": "1a2b817e5d99ae6d",
    }
    assert maintenance.gc_configs("regbox", state) == ("1a2b817e5d99ae6d", "25058420647984c5")
    # Recorded before the token service checked passwords (#22): rollback says it cannot
    # go back to that deploy; once deployed again, both deploys would say who checks them.
    with pytest.raises(RegkitError, match="ran an nginx that checked passwords itself"):
        maintenance.rollback_plan(pki_inv, "regbox", state)
    tokend = {"passwords": "token-service"}
    state.record = {**state.record, **tokend, "previous": {**state.record["previous"], **tokend}}
    plan = maintenance.rollback_plan(pki_inv, "regbox", state)
    assert plan.target["config"] == "d266053b79837738"
    assert plan.registry is not None and plan.nginx is None
    assert plan.record["previous"]["config"] == "1a2b817e5d99ae6d"
    state.configs = ("1a2b817e5d99ae6d",)
    with pytest.raises(RegkitError, match="is no longer in /etc/regkit/registry"):
        maintenance.rollback_plan(pki_inv, "regbox", state)


def test_undeploy_the_recorded_registry_host(pki_inv: Inventory) -> None:
    facts = undeploy.parse_facts(recorded("undeploy-facts-regbox.txt"))
    kept = undeploy.plan(pki_inv, facts, purge_data=False)
    assert [what for what, _ in kept.commands()] == [
        "removing containers",
        "removing networks",
        "removing the images built here",
        "removing configuration and secrets",
    ]
    assert kept.kept == ("/var/lib/regkit/registry",)
    # The lab's data and trust folders, found where regkit keeps them by default.
    assert "/var/lib/regkit/registry" in facts.paths and "/etc/regkit" in facts.paths
