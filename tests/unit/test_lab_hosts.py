"""The lab's host list: two clients by default, more on demand (for the fan-out bench),
and the optional hosts of other container engines (node1, pod1) with --all."""

from __future__ import annotations

import re

import pytest

from lab.hosts import HOSTS, OPTIONAL, RUNTIME_VERSION, host_spec, kept_optional, lab_hosts
from lab.images import IMAGES, ImageSpec, context_tar, image_spec
from lab.settings import LabError


def test_default_lab_has_regbox_two_clients_and_b2d() -> None:
    assert [h.alias for h in HOSTS] == ["regbox", "client1", "client2", "b2d"]
    assert [h.role for h in HOSTS] == ["registry", "client", "client", "client"]


def test_more_clients_are_debian_hosts_of_the_client_role() -> None:
    hosts = lab_hosts(6)
    assert [h.alias for h in hosts][1:7] == [f"client{i}" for i in range(1, 7)]
    assert {(h.image, h.flavor, h.role) for h in hosts[1:7]} == {("host", "debian", "client")}
    assert hosts[-1].alias == "b2d"


def test_all_adds_the_optional_hosts_after_the_others() -> None:
    hosts = lab_hosts(3, optional=True)
    assert [h.alias for h in hosts] == [
        *("regbox", "client1", "client2", "client3", "b2d"),
        *("node1", "pod1"),
    ]
    assert hosts[-2:] == OPTIONAL


def test_optional_hosts_are_debian_clients_without_docker() -> None:
    assert [(h.alias, h.image, h.runtime) for h in OPTIONAL] == [
        ("node1", "node", "containerd"),
        ("pod1", "pod", "podman"),
    ]
    assert {(h.user, h.role, h.flavor) for h in OPTIONAL} == {("admin", "client", "debian")}


@pytest.mark.parametrize(
    ("alias", "volumes"),
    [
        ("regbox", {"regkit-lab-regbox-docker": "/var/lib/docker"}),
        ("client4", {"regkit-lab-client4-docker": "/var/lib/docker"}),
        (
            "b2d",
            {
                "regkit-lab-b2d-boot2docker": "/var/lib/boot2docker",
                "regkit-lab-b2d-docker": "/var/lib/docker",
            },
        ),
        ("node1", {"regkit-lab-node1-containerd": "/var/lib/containerd"}),
        ("pod1", {"regkit-lab-pod1-containers": "/var/lib/containers"}),
    ],
)
def test_each_host_keeps_its_engines_data_on_a_volume(alias: str, volumes: dict[str, str]) -> None:
    assert host_spec(alias).volumes == volumes


@pytest.mark.parametrize(
    ("running", "kept"),
    [
        (set(), ()),
        ({"regkit-lab-regbox", "regkit-lab-node1"}, ("node1",)),
        ({"regkit-lab-pod1", "regkit-lab-node1"}, ("node1", "pod1")),
    ],
)
def test_plain_up_keeps_the_optional_hosts_that_run(running: set[str], kept: tuple[str]) -> None:
    assert tuple(h.alias for h in kept_optional(lab_hosts(), running)) == kept


def test_up_with_all_keeps_nothing_beside_what_it_starts() -> None:
    running = {"regkit-lab-node1", "regkit-lab-pod1"}
    assert kept_optional(lab_hosts(optional=True), running) == ()


def test_host_spec_knows_any_client_number_and_the_optional_hosts() -> None:
    assert host_spec("client9").container == "regkit-lab-client9"
    assert host_spec("b2d").flavor == "boot2docker"
    assert host_spec("node1").container == "regkit-lab-node1"
    assert host_spec("pod1").image == "pod"


@pytest.mark.parametrize("alias", ["client0", "client", "clientx", "nosuch", "node2"])
def test_host_spec_refuses_other_names(alias: str) -> None:
    with pytest.raises(LabError) as refused:
        host_spec(alias)
    assert str(refused.value) == (
        f"{alias!r} is not a lab host; the lab's hosts are regbox, client1, client2, b2d "
        "(and client3, client4, ... with --clients; node1, pod1 with --all)"
    )


def test_status_can_ask_every_hosts_engine_for_its_version() -> None:
    for spec in lab_hosts(optional=True):
        assert spec.runtime in RUNTIME_VERSION


@pytest.mark.parametrize("spec", IMAGES, ids=lambda spec: spec.name)
def test_every_file_a_dockerfile_copies_is_in_its_context(spec: ImageSpec) -> None:
    context = dict(spec.context)
    copied = re.findall(r"^COPY (\S+) ", context["Dockerfile"].read_text(), flags=re.MULTILINE)
    assert set(copied) <= set(context)


def test_the_context_holds_the_common_files_the_spec_names() -> None:
    node = image_spec("node")
    assert [name for name, _ in node.context] == [
        "Dockerfile",
        "packages",
        "common/boot",
        "common/login-user",
        "common/sshd_config",
        "common/init.d-containerd",
    ]
    assert b"common/sshd_config" in context_tar(node)
