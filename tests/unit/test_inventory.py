"""Every inventory mistake ends in one clear line naming the file and key, exit 2."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tasks import inventory, inventory_images
from tasks.errors import InventoryError
from tests.unit.conftest import base_inventory

ROOT = Path(__file__).resolve().parents[2]
INVOKE = [sys.executable, "-m", "invoke"]


def run_task(inv_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, inventory.ENV_VAR: str(inv_path)}
    return subprocess.run(
        [*INVOKE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def changed(path: str, value: Any) -> dict[str, Any]:
    """The base inventory with the value at dotted ``path`` replaced (None deletes it)."""
    data = copy.deepcopy(base_inventory())
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return data


BAD = [
    pytest.param(
        changed("registry.colour", "blue"), "registry.colour: unknown key", id="unknown-key"
    ),
    pytest.param(
        changed("hosts.regbox.port", "ssh"),
        "hosts.regbox.port: expected an integer",
        id="wrong-type",
    ),
    pytest.param(
        changed("hosts.regbox.port", 70000),
        "hosts.regbox.port: input should be less than or equal to 65535",
        id="bad-port",
    ),
    pytest.param(
        changed("registry.domain", None),
        "registry.domain: required key is missing",
        id="missing-domain",
    ),
    pytest.param(
        changed("registry.domain", "bad_name.example"),
        "registry.domain: 'bad_name.example' is not a valid DNS name",
        id="invalid-domain",
    ),
    pytest.param(
        changed("registry.domain", "registry"),
        "registry.domain: 'registry' has no dot",
        id="single-label-domain",
    ),
    pytest.param(
        changed("registry.extra_ips", ["10.0.0.300"]),
        "registry.extra_ips: '10.0.0.300' is not an IPv4 or IPv6 address",
        id="bad-ip",
    ),
    pytest.param(
        changed("registry.images.registry", "registry:latest"),
        "registry.images.registry: 'registry:latest' is not pinned",
        id="unpinned-image",
    ),
    pytest.param(
        changed("hosts.regbox.role", "server"),
        "hosts.regbox.role: expected one of 'registry' or 'client', got 'server'",
        id="bad-role",
    ),
    pytest.param(
        changed("hosts.regbox.sudo", "yes"),
        "hosts.regbox.sudo: expected true or false",
        id="bad-bool",
    ),
    pytest.param(
        changed("hosts.regbox.host_key", "AAAA"),
        "hosts.regbox.host_key: expected a public host key line",
        id="bad-host-key",
    ),
    pytest.param(changed("hosts", ["regbox"]), "hosts: expected a mapping", id="hosts-not-mapping"),
    pytest.param(
        "registry:\n  domain: a.example\nhosts:\n  regbox: {}\n  regbox: {}\n",
        "duplicate key 'regbox'",
        id="duplicate-alias",
    ),
    pytest.param("registry: [unclosed\n", "YAML error at line 2", id="yaml-syntax"),
    pytest.param("a: &x [1]\nb: *x\n", "YAML anchors and aliases are not allowed", id="yaml-alias"),
    pytest.param(b"registry:\n  domain: caf\xe9.example\n", "not valid UTF-8", id="not-utf8"),
    pytest.param(
        "- just\n- a list\n", "expected a mapping with at least 'registry:'", id="not-a-mapping"
    ),
    pytest.param(
        "# " + "x" * (inventory.MAX_BYTES + 1), "more than 1048576 is refused", id="too-large"
    ),
]


@pytest.mark.parametrize(("data", "expected"), BAD)
def test_bad_inventory_is_one_clear_line(
    write_inventory: Callable[..., Path], data: Any, expected: str
) -> None:
    path = write_inventory(data)
    result = run_task(path, "inventory.check")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {path}: ")
    assert expected in lines[0]


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    result = run_task(tmp_path / "nope.yaml", "inventory.check")
    assert result.returncode == 2
    assert "inventory file not found; set REGISTRY_INVENTORY" in result.stderr


def test_unknown_host_alias_names_the_known_ones(write_inventory: Callable[..., Path]) -> None:
    result = run_task(write_inventory(), "render", "--host", "regbx")
    assert result.returncode == 2
    assert "hosts.regbx: unknown host alias; known aliases: client1, regbox" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_key_lists_allowed_keys(write_inventory: Callable[..., Path]) -> None:
    with pytest.raises(InventoryError, match=r"hosts\.regbox\.hots: unknown key; allowed keys: "):
        inventory.load(write_inventory(changed("hosts.regbox.hots", "x")))


def test_valid_inventory_loads_with_defaults(write_inventory: Callable[..., Path]) -> None:
    path = write_inventory()
    inv = inventory.load(path)
    assert inv.registry.domain == "registry.unit.test"
    assert inv.registry.port == 443
    assert inv.registry.url == "https://registry.unit.test"
    assert inv.pki.key_type == "ec-p256"
    assert inv.state_path == path.parent / "state"
    assert inv.with_role("registry") == ["regbox"]
    assert inv.with_role("client") == ["client1"]


def test_non_default_port_is_part_of_the_address(write_inventory: Callable[..., Path]) -> None:
    inv = inventory.load(write_inventory(changed("registry.port", 5443)))
    assert inv.registry.address == "registry.unit.test:5443"


@pytest.mark.parametrize(
    "ref",
    [
        "registry:2.8.3",
        "ghcr.io/org/nginx:1.27",
        "localhost:5000/x/y:1",
        "nginx@sha256:" + "a" * 64,
    ],
)
def test_pinned_image_refs_are_accepted(ref: str) -> None:
    assert inventory_images.check_image_ref(ref) == ref


@pytest.mark.parametrize("ref", ["nginx", "nginx:latest", "Nginx:1", "nginx@sha256:abc"])
def test_unpinned_or_malformed_image_refs_are_refused(ref: str) -> None:
    with pytest.raises(ValueError):
        inventory_images.check_image_ref(ref)


def test_repo_example_inventory_is_valid() -> None:
    inv = inventory.load(ROOT / "inventory.yaml")
    assert inv.with_role("registry") == ["regbox"]


@pytest.mark.parametrize(
    "data_dir",
    ["/", "/var", "relative/path", "/var/lib/a:b", "/var/lib/a,b", "/var/../etc", "/srv/./x/y"],
)
def test_data_dir_that_purge_or_docker_would_mishandle_is_refused(
    write_inventory: Callable[..., Path], data_dir: str
) -> None:
    with pytest.raises(
        InventoryError, match=r"registry\.data_dir: expected an absolute path at least two"
    ):
        inventory.load(write_inventory(changed("registry.data_dir", data_dir)))


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def with_host_key(line: str, port: int | None) -> dict[str, Any]:
    """The unit inventory with regbox at registry.example.com (on ``port``) and ``line``."""
    data = base_inventory()
    data["hosts"]["regbox"] = {"hostname": "registry.example.com", "host_key": line}
    if port:
        data["hosts"]["regbox"]["port"] = port
    return data


@pytest.mark.parametrize(
    ("line", "port"),
    [
        (f"registry.example.com {KEY}", None),
        (f"registry.example.com,192.0.2.10 {KEY}", None),
        (f"[registry.example.com]:2222 {KEY}", 2222),
        (f"|1|aGFzaA==|c2FsdA== {KEY}", None),
        (KEY, 2222),
    ],
)
def test_a_host_key_is_taken_as_ssh_keyscan_prints_it(
    write_inventory: Callable[..., Path], line: str, port: int | None
) -> None:
    inv = inventory.load(write_inventory(with_host_key(line, port)))
    assert inv.hosts["regbox"].host_key == KEY


@pytest.mark.parametrize(
    ("line", "port"),
    [(f"other.example.com {KEY}", None), (f"registry.example.com {KEY}", 2222)],
)
def test_a_keyscan_line_of_another_host_is_refused(
    write_inventory: Callable[..., Path], line: str, port: int | None
) -> None:
    with pytest.raises(InventoryError, match=r"the ssh-keyscan line is for .*, but this host is"):
        inventory.load(write_inventory(with_host_key(line, port)))
