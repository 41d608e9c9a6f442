"""The lab's host list: two clients by default, more on demand (for the fan-out bench)."""

from __future__ import annotations

import pytest

from lab.hosts import HOSTS, host_spec, lab_hosts
from lab.settings import LabError


def test_default_lab_has_regbox_two_clients_and_b2d() -> None:
    assert [h.alias for h in HOSTS] == ["regbox", "client1", "client2", "b2d"]
    assert [h.role for h in HOSTS] == ["registry", "client", "client", "client"]


def test_more_clients_are_debian_hosts_of_the_client_role() -> None:
    hosts = lab_hosts(6)
    assert [h.alias for h in hosts][1:7] == [f"client{i}" for i in range(1, 7)]
    assert {(h.image, h.flavor, h.role) for h in hosts[1:7]} == {("host", "debian", "client")}
    assert hosts[-1].alias == "b2d"


def test_host_spec_knows_any_client_number() -> None:
    assert host_spec("client9").container == "regkit-lab-client9"
    assert host_spec("b2d").flavor == "boot2docker"


@pytest.mark.parametrize("alias", ["client0", "client", "clientx", "nosuch"])
def test_host_spec_refuses_other_names(alias: str) -> None:
    with pytest.raises(LabError, match="is not a lab host; the lab's hosts are regbox, "):
        host_spec(alias)
