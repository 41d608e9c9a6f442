"""The mirror's pure parts: its inventory section, its config and site, its client
certificates, the deploy plan's mirror container, and trust-ca --mirror's plan."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tasks import health, inventory, layout, mirror, render, users, wanted
from tasks.errors import InventoryError
from tasks.inventory import Inventory
from tasks.plans import deploy as planner
from tasks.plans import deploy_facts
from tasks.plans import mirror_trust as trust
from tasks.plans.runtimes import RuntimeConfigError
from tests.unit.conftest import base_inventory

URL = "https://registry.unit.test:5443"


@pytest.fixture
def mirror_inv(write_inventory: Callable[..., Path], pki_inv: Inventory) -> Inventory:
    """The unit inventory with a mirror of Docker Hub, sharing pki_inv's state folder."""
    data = base_inventory()
    data["registry"]["mirror"] = {}
    return inventory.load(write_inventory(data))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"port": 443}, "mirror.port 443 is the registry's port"),
        ({"data_dir": "/var/lib/regkit"}, "overlaps data_dir /var/lib/regkit/registry"),
        ({"data_dir": "/var/lib/regkit/registry/cache"}, "overlaps data_dir"),
        ({"upstream": "https://u:p@hub.example"}, "invoke mirror.set-credentials"),
        ({"upstream": "https://hub.example/library"}, "give only scheme, host and port"),
        ({"upstream": "ftp://hub.example"}, "is not an http:// or https:// URL"),
        ({"upstream": "http://hub.example", "ca_file": "ca.pem"}, "ca_file is for an https"),
    ],
)
def test_a_mirror_that_cannot_work_is_refused(
    write_inventory: Callable[..., Path], section: dict[str, object], message: str
) -> None:
    data = base_inventory()
    data["registry"]["mirror"] = section
    with pytest.raises(InventoryError, match=message):
        inventory.load(write_inventory(data))


def test_the_defaults_mirror_docker_hub_on_5443(mirror_inv: Inventory) -> None:
    m = mirror_inv.registry.mirror
    assert m is not None
    assert (m.upstream, m.port, m.data_dir) == (
        "https://registry-1.docker.io",
        5443,
        "/var/lib/regkit/mirror",
    )
    assert mirror_inv.registry.mirror_address == "registry.unit.test:5443"


def test_the_mirror_config_proxies_the_upstream_on_the_internal_address(
    mirror_inv: Inventory,
) -> None:
    config = yaml.safe_load(render.render_all(mirror_inv)["mirror/config.yml"][0])
    assert config["proxy"] == {"remoteurl": "https://registry-1.docker.io"}
    assert config["http"]["addr"] == "mirror:5000"
    assert config["http"]["debug"] == {"addr": "127.0.0.1:5001"}
    assert config["storage"]["filesystem"] == {"rootdirectory": "/var/lib/registry"}
    assert "auth" not in config


def test_the_upstream_login_is_in_the_config_only(mirror_inv: Inventory) -> None:
    mirror.credentials_path(mirror_inv).write_text(
        json.dumps({"username": "team", "password": "dckr_pat_secret"})
    )
    config = yaml.safe_load(render.render_all(mirror_inv)["mirror/config.yml"][0])
    assert config["proxy"]["username"] == "team"
    assert config["proxy"]["password"] == "dckr_pat_secret"
    assert "dckr_pat_secret" not in repr(mirror.read_login(mirror_inv))


def test_the_site_asks_for_a_client_certificate_and_refuses_pushes(mirror_inv: Inventory) -> None:
    site = render.render_all(mirror_inv)["nginx/registry.conf"][0]
    block = site[site.index("# The mirror:") :]
    assert "listen 5443 ssl;" in block
    assert "ssl_client_certificate /etc/nginx/regkit/tls/mirror-clients-ca.crt;" in block
    assert "ssl_verify_client on;" in block
    assert "return 405" in block and "push to registry.unit.test" in block
    plain = render.render_all(
        mirror_inv.model_copy(
            update={"registry": mirror_inv.registry.model_copy(update={"mirror": None})}
        )
    )
    assert "# The mirror:" not in plain["nginx/registry.conf"][0]


def test_a_client_certificate_is_for_clients_of_this_ca_only(mirror_inv: Inventory) -> None:
    _key, pem = mirror.issue_client(mirror_inv, "client1")
    cert = x509.load_pem_x509_certificate(pem)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert mirror.client_current(mirror_inv, "client1", pem)
    assert not mirror.client_current(mirror_inv, "client2", pem)
    key_file, cert_file = mirror.client_ca_paths(mirror_inv)
    key_file.unlink()
    cert_file.unlink()
    assert not mirror.client_current(mirror_inv, "client1", pem)
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"


def test_a_deploy_adds_the_mirror_and_a_later_one_removes_it(mirror_inv: Inventory) -> None:
    users.set_password(mirror_inv, "alice", "correct horse battery")
    users.ensure_probe_credential(mirror_inv)
    files = wanted.registry_files(mirror_inv)
    fresh = deploy_facts.parse_facts("os\tdebian\ndocker\t20.10\ndisk_free_kb\t99999999")
    plan = planner.plan(mirror_inv, "regbox", files, fresh)
    assert plan.mirror is not None and plan.mirror.why == "created"
    assert "regkit-mirror" in planner.recreated(plan)
    assert "-p" in plan.nginx.spec.args and "5443:5443" in plan.nginx.spec.args
    paths = {f.path: f.mode for f in files}
    config = wanted.mirror_config(files)
    assert (
        config is not None
        and config.path == f"{layout.mirror_config_dir(config.digest)}/config.yml"
    )
    assert paths[config.path] == 0o600 and paths["/etc/regkit/mirror-probe.key"] == 0o600
    assert (
        f"{layout.mirror_config_dir(config.digest)}:/etc/docker/registry:ro"
        in plan.mirror.spec.args
    )
    # Deployed, with an older config staged too: that one goes once the deploy is proved.
    current = layout.mirror_config_dir(config.digest).rsplit("/", 1)[1]
    fresh.mirror_configs = (current, "0123456789abcdef")
    again = planner.plan(mirror_inv, "regbox", files, fresh)
    assert again.prune == ("/etc/regkit/mirror/0123456789abcdef",)
    # Then the section is taken out of the inventory: the container goes, and its files.
    fresh.containers["regkit-mirror"] = deploy_facts.Container("sha256:x", "spec", True)
    bare = mirror_inv.model_copy(
        update={"registry": mirror_inv.registry.model_copy(update={"mirror": None})}
    )
    plan = planner.plan(bare, "regbox", wanted.registry_files(bare), fresh)
    assert plan.mirror is None and plan.remove_mirror
    assert plan.prune == (f"/etc/regkit/mirror/{current}", "/etc/regkit/mirror/0123456789abcdef")


def test_daemon_json_keeps_every_other_key_and_mirror() -> None:
    before = json.dumps({"log-level": "warn", "registry-mirrors": ["https://other.example"]})
    merged = trust.with_mirror(before, URL)
    assert merged is not None
    assert json.loads(merged) == {
        "log-level": "warn",
        "registry-mirrors": [URL, "https://other.example"],
    }
    assert trust.with_mirror(merged, URL) is None
    assert json.loads(trust.without_mirror(merged, URL) or "") == json.loads(before)
    assert trust.without_mirror(before, URL) is None
    assert trust.names_mirror(merged, URL) and not trust.names_mirror(before, URL)
    assert not trust.names_mirror(json.dumps({"registry-mirrors": [URL + "0"]}), URL)


def test_a_daemon_json_left_empty_goes_and_dockerd_is_told_first() -> None:
    only = trust.with_mirror(None, URL)
    assert only is not None and json.loads(only) == {"registry-mirrors": [URL]}
    assert trust.without_mirror(only, URL) == ""
    assert json.loads(trust.reload_text("")) == {"registry-mirrors": []}
    assert json.loads(trust.reload_text('{"debug": true}\n')) == {
        "debug": True,
        "registry-mirrors": [],
    }


@pytest.mark.parametrize("text", ["{not json", "[1]", '{"registry-mirrors": "x"}'])
def test_a_daemon_json_regkit_cannot_read_is_left_alone(text: str) -> None:
    with pytest.raises(RuntimeConfigError, match=r"/etc/docker/daemon\.json"):
        trust.with_mirror(text, URL)


def runtimes(inv: Inventory) -> list[trust.RuntimeMirror]:
    return trust.runtimes_of(inv, True, True, True, "/etc/containerd/certs.d")


def test_each_runtime_gets_the_ca_its_pair_and_what_names_the_mirror(
    mirror_inv: Inventory,
) -> None:
    rts = runtimes(mirror_inv)
    plan = trust.plan(mirror_inv, rts, trust.MirrorFacts(), b"CA", (b"KEY", b"CERT"))
    placed = {u.path: u.mode for u in plan.uploads}
    assert placed["/etc/docker/certs.d/registry.unit.test:5443/client.key"] == 0o600
    assert "/etc/containerd/certs.d/docker.io/hosts.toml" in placed
    assert "/etc/containers/registries.conf.d/50-regkit-mirror.conf" in placed
    assert "/etc/containers/certs.d/registry.unit.test:5443/client.cert" in placed
    assert plan.daemon_json is not None and URL in plan.daemon_json
    toml = next(u for u in plan.uploads if u.path.endswith("hosts.toml")).content.decode()
    assert 'server = "https://registry-1.docker.io"' in toml
    assert f'[host."{URL}"]' in toml and 'capabilities = ["pull", "resolve"]' in toml


def test_a_second_run_with_everything_in_place_changes_nothing(mirror_inv: Inventory) -> None:
    rts = runtimes(mirror_inv)
    configs = {rt.config for rt in rts}
    first = trust.plan(mirror_inv, rts, trust.MirrorFacts(), b"CA", (b"KEY", b"CERT"))
    facts = trust.MirrorFacts(
        daemon_json=first.daemon_json,
        files={u.path: u.fact for u in first.uploads},
        configs={u.path: u.content.decode() for u in first.uploads if u.path in configs},
    )
    assert not trust.plan(mirror_inv, rts, facts, b"CA", None).changes
    removed = trust.untrust_plan(mirror_inv, rts, facts)
    assert set(removed.remove) == {u.path for u in first.uploads}
    assert removed.daemon_json == ""


def test_a_docker_io_hosts_toml_of_someone_else_is_not_replaced(mirror_inv: Inventory) -> None:
    rts = runtimes(mirror_inv)
    theirs = "/etc/containerd/certs.d/docker.io/hosts.toml"
    facts = trust.MirrorFacts(configs={theirs: 'server = "https://mirror.corp"\n'})
    with pytest.raises(RuntimeConfigError, match="is not regkit's"):
        trust.plan(mirror_inv, rts, facts, b"CA", None)
    facts.files[theirs] = "x 644 0 0"
    assert theirs not in trust.untrust_plan(mirror_inv, rts, facts).remove


def test_status_says_what_the_mirror_holds_and_served() -> None:
    counters = {"Requests": 7, "Hits": 7, "Misses": 2, "BytesPulled": 1, "BytesPushed": 2}
    proxy = {"blobs": counters, "manifests": {**counters, "Requests": 3, "Misses": 1}}
    values = {"mirror_disk": "12M", "mirror_vars": json.dumps({"registry": {"proxy": proxy}})}
    assert health.mirror_line(values) == (
        "mirror: cache 12M on disk; since it started, manifests: 3 served, 1 fetched from "
        "the upstream; blobs: 7 served, 2 fetched from the upstream"
    )
    assert health.mirror_line({"mirror_disk": ""}) == (
        "mirror: cache empty on disk; its counters did not answer"
    )
