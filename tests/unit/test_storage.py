"""registry.storage in the inventory, the S3 keys in the local state, and the config."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks import commands, inventory, pki, render, storage, wanted
from tasks.errors import InventoryError, RegkitError, StateError
from tasks.inventory import Inventory
from tasks.layout import NETWORK, REGISTRY
from tests.unit.conftest import base_inventory

S3 = {"endpoint": "http://10.0.0.5:7480", "bucket": "registry"}


def with_storage(value: dict[str, Any]) -> dict[str, Any]:
    data = base_inventory()
    data["registry"]["storage"] = value
    return data


def load(
    write_inventory: Callable[..., Path], value: dict[str, Any], name: str = "inv.yaml"
) -> Inventory:
    return inventory.load(write_inventory(with_storage(value), name=name))


def test_filesystem_is_the_default(inv: Inventory) -> None:
    assert inv.registry.storage.driver == "filesystem"
    assert inv.registry.storage.s3 is None


def test_s3_settings_and_their_defaults(write_inventory: Callable[..., Path]) -> None:
    s3 = load(write_inventory, {"driver": "s3", "s3": {**S3, "endpoint": "https://s3.x:9000/"}})
    settings = s3.registry.storage.s3
    assert settings is not None
    assert settings.endpoint == "https://s3.x:9000"
    assert (settings.region, settings.root_directory, settings.https) == ("us-east-1", "/", True)
    assert (settings.chunk_size, settings.redirect) == (10 * 1024 * 1024, False)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"driver": "s3"}, r"registry\.storage: .*driver is s3: say where under s3:"),
        ({"s3": S3}, r"registry\.storage: .*driver is filesystem; set driver: s3"),
        (
            {"driver": "s3", "s3": {**S3, "endpoint": "ftp://x"}},
            r"registry\.storage\.s3\.endpoint: .*not an http:// or https:// URL",
        ),
        (
            {"driver": "s3", "s3": {**S3, "endpoint": "http://AK:SK@x"}},
            r"registry\.storage\.s3\.endpoint: .*no keys in the endpoint",
        ),
        (
            {"driver": "s3", "s3": {**S3, "endpoint": "http://x/registry"}},
            r"registry\.storage\.s3\.endpoint: .*only scheme, host and port",
        ),
        (
            {"driver": "s3", "s3": {**S3, "secure": True}},
            r"registry\.storage\.s3: .*secure is true but the endpoint is http://",
        ),
        ({"driver": "s3", "s3": {**S3, "bucket": "Bad_Bucket"}}, r"registry\.storage\.s3\.bucket"),
        ({"driver": "s3", "s3": {**S3, "chunk_size": 1024}}, r"registry\.storage\.s3\.chunk_size"),
        ({"driver": "azure"}, r"registry\.storage\.driver"),
        (
            {"driver": "s3", "s3": {**S3, "ca_file": "s3-ca.pem"}},
            r"registry\.storage\.s3: .*ca_file is for an https endpoint",
        ),
    ],
)
def test_bad_storage_settings_are_one_clear_line(
    write_inventory: Callable[..., Path], value: dict[str, Any], says: str
) -> None:
    with pytest.raises(InventoryError, match=says):
        load(write_inventory, value)


def test_keys_are_kept_0600_and_read_back(inv: Inventory) -> None:
    keys = storage.check_keys("AKIAEXAMPLE1234", "secret/With+Signs")
    assert storage.write_keys(inv, keys)
    assert not storage.write_keys(inv, keys)
    path = storage.keys_path(inv)
    assert path.stat().st_mode & 0o777 == 0o600
    assert storage.read_keys(inv) == keys
    assert "secret" not in repr(keys) and keys.shown == "…1234"


def test_missing_or_damaged_keys_say_what_to_run(inv: Inventory) -> None:
    with pytest.raises(StateError, match=r"invoke storage\.set-credentials"):
        storage.read_keys(inv)
    storage.keys_path(inv).parent.mkdir(parents=True, exist_ok=True)
    storage.keys_path(inv).write_text("{not json")
    with pytest.raises(StateError, match="not the S3 keys this tool writes"):
        storage.read_keys(inv)


@pytest.mark.parametrize(("access", "secret"), [("", "s"), ("a b", "s"), ("a", "s\x00")])
def test_bad_keys_are_refused(access: str, secret: str) -> None:
    with pytest.raises(RegkitError, match=r"the S3 (access|secret) key"):
        storage.check_keys(access, secret)


def test_the_registry_config_uses_the_bucket_and_the_stored_keys(
    write_inventory: Callable[..., Path],
) -> None:
    s3 = load(write_inventory, {"driver": "s3", "s3": S3})
    with pytest.raises(StateError, match=r"invoke storage\.set-credentials"):
        render.context(s3)
    storage.write_keys(s3, storage.check_keys("AK1", 'S"K'))
    config = yaml.safe_load(render.render("config.yml.j2", render.context(s3)))
    assert "filesystem" not in config["storage"]
    assert config["storage"]["s3"] == {
        "accesskey": "AK1",
        "secretkey": 'S"K',
        "region": "us-east-1",
        "regionendpoint": "http://10.0.0.5:7480",
        "bucket": "registry",
        "rootdirectory": "/",
        "secure": False,
        "v4auth": True,
        "chunksize": 10 * 1024 * 1024,
    }
    assert config["storage"]["redirect"] == {"disable": True}
    assert config["http"]["addr"] == "registry:5000"
    spec = wanted.registry_spec(s3, "ab" * 32)
    assert spec.more_networks == (NETWORK,)
    assert commands.docker_start(spec).endswith(f"docker start {REGISTRY}")


def test_a_private_ca_of_the_service_is_trusted_besides_the_systems(
    write_inventory: Callable[..., Path], pki_inv: Inventory
) -> None:
    ca = pki.paths(pki_inv).ca_cert
    https = {**S3, "endpoint": "https://10.0.0.5:7443", "ca_file": str(ca)}
    s3 = load(write_inventory, {"driver": "s3", "s3": https}, name="ca.yaml")
    storage.write_keys(s3, storage.check_keys("AK1", "SK1"))
    pem = ca.read_bytes()
    assert storage.s3_ca(s3) == pem
    config = render.render("config.yml.j2", render.context(s3))
    assert f"private CA (sha256\n  # {hashlib.sha256(pem).hexdigest()})" in config
    args = wanted.registry_spec(s3, "ab" * 32).args
    assert args[-4:] == (
        "-v",
        "/etc/regkit/s3-ca.crt:/etc/regkit-s3-ca.crt:ro",
        "-e",
        "SSL_CERT_FILE=/etc/regkit-s3-ca.crt",
    )
    assert "AWS_CA_BUNDLE" not in " ".join(args)
    for bad, says in ((b"not a certificate", "holds no PEM certificate"), (None, "cannot read")):
        target = Path(str(ca) + ".bad")
        if bad is not None:
            target.write_bytes(bad)
        broken = load(
            write_inventory, {"driver": "s3", "s3": {**https, "ca_file": str(target)}}, "bad.yaml"
        )
        with pytest.raises(InventoryError, match=f"registry.storage.s3.ca_file: .*{says}"):
            storage.s3_ca(broken)
        target.unlink(missing_ok=True)


def test_a_filesystem_config_has_no_s3(inv: Inventory) -> None:
    config = yaml.safe_load(render.render("config.yml.j2", render.context(inv)))
    assert config["storage"]["filesystem"] == {"rootdirectory": "/var/lib/registry"}
    assert "s3" not in config["storage"] and "redirect" not in config["storage"]
    assert config["http"]["addr"] == ":5000"
    assert wanted.registry_spec(inv, "ab" * 32).more_networks == ()


def test_backup_and_restore_refuse_s3_storage(
    write_inventory: Callable[..., Path], inv: Inventory
) -> None:
    s3 = load(write_inventory, {"driver": "s3", "s3": S3}, name="s3.yaml")
    with pytest.raises(RegkitError, match=r"fab backup works on a registry that keeps its data"):
        storage.needs_filesystem(s3, "fab backup")
    assert storage.needs_filesystem(inv, "fab backup") is None


def test_replicas_are_the_registry_hosts_sharing_a_bucket(
    write_inventory: Callable[..., Path], inv: Inventory
) -> None:
    data = with_storage({"driver": "s3", "s3": S3})
    one = inventory.load(write_inventory(data, name="one.yaml"))
    assert storage.sharing(one) == []
    data["hosts"]["regbox2"] = {"hostname": "127.0.0.2", "role": "registry"}
    two = inventory.load(write_inventory(data, name="two.yaml"))
    assert storage.sharing(two) == ["regbox", "regbox2"]
    data["registry"].pop("storage")
    on_disks = inventory.load(write_inventory(data, name="disks.yaml"))
    assert storage.sharing(on_disks) == []
