"""The lab's host list: two clients by default, more on demand (for the fan-out bench),
the optional hosts of other container engines (node1, pod1) and the scale-out host
store (S3) with --all, store alone with --scale-out; store's S3 credentials file."""

from __future__ import annotations

import re

import pytest

from lab.access import inventory_data
from lab.hosts import (
    HOSTS,
    OPTIONAL,
    RUNTIME_VERSION,
    SCALE_OUT,
    host_spec,
    kept_optional,
    lab_hosts,
)
from lab.images import IMAGES, ImageSpec, context_tar, image_spec, needed_images
from lab.settings import LabError
from lab.store import s3_document
from tasks.inventory import Inventory


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
        *("node1", "pod1", "store", "regbox2"),
    ]
    assert hosts[-4:] == OPTIONAL


def test_scale_out_adds_store_and_a_second_registry_host() -> None:
    hosts = lab_hosts(scale_out=True)
    aliases = [h.alias for h in hosts]
    assert aliases == ["regbox", "client1", "client2", "b2d", "store", "regbox2"]
    assert lab_hosts(optional=True, scale_out=True) == lab_hosts(optional=True)


def test_optional_hosts_are_debian_hosts_of_each_engine() -> None:
    assert [(h.alias, h.image, h.runtime, h.role) for h in OPTIONAL] == [
        ("node1", "node", "containerd", "client"),
        ("pod1", "pod", "podman", "client"),
        ("store", "store", "s3", "store"),
        ("regbox2", "host", "docker", "registry"),
    ]
    assert {(h.user, h.flavor) for h in OPTIONAL} == {("admin", "debian")}
    assert OPTIONAL[-2:] == SCALE_OUT


def test_store_is_never_in_the_inventory() -> None:
    specs = lab_hosts(optional=True)
    assert [h.alias for h in specs if not h.in_inventory] == ["store"]
    managed = tuple(h for h in specs if h.in_inventory)
    ports = {h.alias: 2200 + i for i, h in enumerate(managed)}
    keys = {h.alias: f"ssh-ed25519 AAAA{h.alias}" for h in managed}
    inv = Inventory.model_validate(inventory_data(managed, ports, keys, {}))
    assert list(inv.hosts) == ["regbox", "client1", "client2", "b2d", "node1", "pod1", "regbox2"]
    assert inv.with_role("registry") == ["regbox", "regbox2"]


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
        ("store", {"regkit-lab-store-ceph": "/var/lib/ceph"}),
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
        ({"regkit-lab-store"}, ("store",)),
    ],
)
def test_plain_up_keeps_the_optional_hosts_that_run(running: set[str], kept: tuple[str]) -> None:
    assert tuple(h.alias for h in kept_optional(lab_hosts(), running)) == kept


def test_up_with_all_keeps_nothing_beside_what_it_starts() -> None:
    running = {"regkit-lab-node1", "regkit-lab-pod1", "regkit-lab-store"}
    assert kept_optional(lab_hosts(optional=True), running) == ()


def test_up_with_scale_out_keeps_the_other_optional_hosts() -> None:
    running = {"regkit-lab-node1", "regkit-lab-store"}
    assert [h.alias for h in kept_optional(lab_hosts(scale_out=True), running)] == ["node1"]


def test_host_spec_knows_any_client_number_and_the_optional_hosts() -> None:
    assert host_spec("client9").container == "regkit-lab-client9"
    assert host_spec("b2d").flavor == "boot2docker"
    assert host_spec("node1").container == "regkit-lab-node1"
    assert host_spec("pod1").image == "pod"
    assert host_spec("store").image == "store"


@pytest.mark.parametrize("alias", ["client0", "client", "clientx", "nosuch", "node2"])
def test_host_spec_refuses_other_names(alias: str) -> None:
    with pytest.raises(LabError) as refused:
        host_spec(alias)
    assert str(refused.value) == (
        f"{alias!r} is not a lab host; the lab's hosts are regbox, client1, client2, b2d "
        "(and client3, client4, ... with --clients; node1, pod1 with --all; "
        "store, regbox2 with --scale-out or --all)"
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


@pytest.mark.parametrize(
    ("booted", "built"),
    [
        ({"host", "b2d"}, ["host", "b2d", "registry", "nginx", "python"]),
        ({"b2d"}, ["host", "b2d", "registry", "nginx", "python"]),
        ({"host", "b2d", "store"}, ["host", "b2d", "store", "registry", "nginx", "python"]),
    ],
)
def test_up_builds_only_the_images_its_hosts_boot_and_regbox_serves(
    booted: set[str], built: list[str]
) -> None:
    assert [spec.name for spec in needed_images(booted)] == built


# As `radosgw-admin user info --uid=registry` prints it (Ceph 16), abridged.
USER_INFO = """{
    "user_id": "registry",
    "display_name": "regkit lab registry",
    "subusers": [],
    "keys": [
        {
            "user": "registry",
            "access_key": "Q1W2E3R4T5Y6U7I8O9P0",
            "secret_key": "aSecretOfFortyCharactersMadeByRadosgwAdm"
        }
    ],
    "swift_keys": [],
    "caps": []
}
"""


def test_s3_json_names_the_ip_endpoint_the_bucket_and_the_users_keys() -> None:
    assert s3_document(USER_INFO, "172.18.0.7") == {
        "endpoint": "http://172.18.0.7:7480",
        "https_endpoint": "https://172.18.0.7:7443",
        "region": "us-east-1",
        "bucket": "registry",
        "access_key": "Q1W2E3R4T5Y6U7I8O9P0",
        "secret_key": "aSecretOfFortyCharactersMadeByRadosgwAdm",
    }


def test_a_user_without_keys_is_a_lab_error() -> None:
    with pytest.raises(LabError, match="has no keys"):
        s3_document('{"user_id": "registry", "keys": []}', "172.18.0.7")


@pytest.mark.parametrize(
    ("alias", "flag"),
    [("regbox", ""), ("client3", ""), ("node1", "--all"), ("store", "--scale-out"),
     ("regbox2", "--scale-out")],
)  # fmt: skip
def test_each_host_names_the_lab_up_flag_that_starts_it(alias: str, flag: str) -> None:
    assert host_spec(alias).up_flag == flag
