"""Each runtime's trust: where containerd and podman read the CA, and containerd's config."""

from __future__ import annotations

import base64
import tomllib

import pytest

from tasks import certificates, logins, pki
from tasks.inventory import Inventory
from tasks.plans import runtimes
from tasks.plans import trust as trust_planner
from tasks.plans.runtimes import CONTAINERD_CONFIG, RuntimeConfigError
from tasks.plans.trust import TrustFacts

CRI = 'plugins."io.containerd.grpc.v1.cri"'


def config_path(text: str) -> str:
    return tomllib.loads(text)["plugins"]["io.containerd.grpc.v1.cri"]["registry"]["config_path"]


@pytest.mark.parametrize("current", [None, "", "# containerd's defaults\n"])
def test_no_config_gets_a_version_2_file_with_config_path(current: str | None) -> None:
    change = runtimes.containerd_config(current)
    assert change.text is not None
    assert tomllib.loads(change.text)["version"] == 2
    assert config_path(change.text) == runtimes.CONTAINERD_HOSTS
    assert change.hosts_dir == runtimes.CONTAINERD_HOSTS
    if current:
        assert change.text.startswith(current)


def test_config_path_is_added_and_everything_else_kept() -> None:
    current = f'version = 2\n# ours\n[{CRI}]\n  sandbox_image = "pause:3.9"\n'
    change = runtimes.containerd_config(current)
    assert change.text is not None and change.text.startswith(current)
    assert config_path(change.text) == runtimes.CONTAINERD_HOSTS
    assert tomllib.loads(change.text)["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"]


def test_version_1_configs_name_the_plugin_cri() -> None:
    change = runtimes.containerd_config("[plugins.cri]\n  x = 1\n")
    assert change.text is not None
    cri = tomllib.loads(change.text)["plugins"]["cri"]
    assert cri == {"x": 1, "registry": {"config_path": runtimes.CONTAINERD_HOSTS}}


@pytest.mark.parametrize(
    ("current", "hosts_dir"),
    [
        (f'version = 2\n[{CRI}.registry]\n  config_path = "/etc/reg"\n', "/etc/reg"),
        (
            'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n',
            "/etc/containerd/certs.d",
        ),
        ('disabled_plugins = ["cri"]\n', "/etc/containerd/certs.d"),
        ("version = 3\n", "/etc/containerd/certs.d"),
    ],
)
def test_a_config_that_needs_nothing_is_left_alone(current: str, hosts_dir: str) -> None:
    change = runtimes.containerd_config(current)
    assert (change.text, change.hosts_dir) == (None, hosts_dir)


@pytest.mark.parametrize(
    ("current", "says"),
    [
        (f'version = 2\n[{CRI}.registry.mirrors."docker.io"]\n  endpoint = ["x"]\n', "mirrors"),
        ("version = 2\n[plugins\n", "not valid TOML"),
        ("version = 7\n", "version = 7"),
    ],
)
def test_a_config_regkit_cannot_change_safely_is_refused(current: str, says: str) -> None:
    with pytest.raises(RuntimeConfigError, match=says):
        runtimes.containerd_config(current)
    assert runtimes.hosts_dir(current) == runtimes.CONTAINERD_HOSTS


def test_hosts_toml_names_the_registry_and_the_ca_beside_it(pki_inv: Inventory) -> None:
    parsed = tomllib.loads(runtimes.hosts_toml(pki_inv, "/etc/containerd/certs.d").decode())
    url = pki_inv.registry.url
    assert parsed["server"] == url
    host = parsed["host"][url]
    assert host["ca"] == f"/etc/containerd/certs.d/{pki_inv.registry.address}/ca.crt"
    assert set(host["capabilities"]) == {"pull", "resolve", "push"}


@pytest.fixture
def pems(pki_inv: Inventory) -> list[bytes]:
    return [certificates.cert_pem(pki.read_cert(pki.paths(pki_inv).ca_cert))]


def node(**more: object) -> TrustFacts:
    return TrustFacts(os="debian", update_ca_certificates=True, containerd=True, **more)


def test_a_containerd_node_gets_hosts_toml_and_one_restart(
    pki_inv: Inventory, pems: list[bytes]
) -> None:
    addr = pki_inv.registry.address
    first = trust_planner.plan(pki_inv, "debian", node(), pems)
    paths = {u.path for u in first.uploads}
    assert f"/etc/containerd/certs.d/{addr}/hosts.toml" in paths
    assert f"/etc/containerd/certs.d/{addr}/ca.crt" in paths
    assert CONTAINERD_CONFIG in paths
    assert pki_inv.registry.certs_d not in paths
    assert [r.name for r in first.runtimes] == ["containerd"]
    assert first.restart_containerd and not first.restart_docker

    written = next(u for u in first.uploads if u.path == CONTAINERD_CONFIG).content
    installed = {u.path: u.fact for u in first.uploads if u.path != CONTAINERD_CONFIG}
    settled = node(
        files=installed, in_bundle={0: 1}, containerd_config=written.decode(), docker=False
    )
    again = trust_planner.plan(pki_inv, "debian", settled, pems)
    assert not again.changes and not again.restart_containerd


def test_a_custom_hosts_dir_is_used_as_it_is(pki_inv: Inventory, pems: list[bytes]) -> None:
    facts = node(containerd_config=f'version = 2\n[{CRI}.registry]\n  config_path = "/etc/r"\n')
    plan = trust_planner.plan(pki_inv, "debian", facts, pems)
    assert f"/etc/r/{pki_inv.registry.address}/hosts.toml" in {u.path for u in plan.uploads}
    assert not plan.restart_containerd


def test_a_podman_host_gets_containers_certs_d_and_no_restart(
    pki_inv: Inventory, pems: list[bytes]
) -> None:
    facts = TrustFacts(os="debian", update_ca_certificates=True, containers=True)
    plan = trust_planner.plan(pki_inv, "debian", facts, pems)
    wanted = f"/etc/containers/certs.d/{pki_inv.registry.address}/ca.crt"
    assert {u.path: u.content for u in plan.uploads}[wanted] == pems[0]
    assert [r.name for r in plan.runtimes] == ["podman/buildah/skopeo"]
    assert not plan.restart_containerd and not plan.restart_docker
    assert plan.runtime_changed(plan.runtimes[0])


def test_docker_on_containerd_gets_both(pki_inv: Inventory, pems: list[bytes]) -> None:
    facts = node(docker=True, docker_installed=True, docker_on_containerd=True)
    plan = trust_planner.plan(pki_inv, "debian", facts, pems)
    assert [r.name for r in plan.runtimes] == ["Docker", "containerd"]
    assert plan.restart_containerd and plan.restart_docker


def test_untrust_removes_every_runtime_file(pki_inv: Inventory, pems: list[bytes]) -> None:
    facts = node(containers=True)
    placed = trust_planner.plan(pki_inv, "debian", facts, pems).uploads
    installed = {u.path: u.fact for u in placed}
    gone = trust_planner.untrust_plan(pki_inv, "debian", node(containers=True, files=installed))
    assert set(gone.remove) == set(installed) - {CONTAINERD_CONFIG}
    assert not gone.restart_containerd


def test_parse_facts_reads_the_runtimes() -> None:
    config = base64.b64encode(b"version = 2\n").decode()
    out = f"containerd\tyes\ncontainers\tyes\nlogin_tool\tpodman\ncontainerd_config\t{config}\n"
    facts = trust_planner.parse_facts(out + "docker_installed\tyes\ndocker_on_containerd\tyes\n")
    assert (facts.containerd, facts.containers, facts.login_tool) == (True, True, "podman")
    assert facts.containerd_config == "version = 2\n"
    assert facts.docker_installed and facts.docker_on_containerd


def test_the_kubernetes_line_keeps_the_password_out_of_argv(pki_inv: Inventory) -> None:
    line = logins.kubernetes_secret(pki_inv, "alice")
    assert "--docker-password" not in line
    assert f"login -u alice {pki_inv.registry.address}" in line
    assert "--from-file=.dockerconfigjson=DIR/config.json" in line
