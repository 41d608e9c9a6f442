"""Deploy's planning logic: facts in, decisions out (no SSH here; the lab proves the rest)."""

from __future__ import annotations

import pytest

from tasks import catalog, deploy, pki, users
from tasks.deploy import Container, Facts, RunSpec
from tasks.inventory import Inventory

FACTS_OUTPUT = "\n".join(
    [
        "os\tdebian",
        "apt\tyes",
        "curl\tyes",
        "docker\t20.10.24+dfsg1",
        "disk_free_kb\t5242880",
        "port_holder\t",
        "net:regkit\tfalse <no value>",
        "net:regkit-backend\ttrue true",
        "forwarding\t1 -P FORWARD DROP",
        "file:/etc/regkit/ca.crt\tabc123 644 0 0",
        "ctr:regkit-registry\tc1|sha256:img1|spec1|true|2026-11-28T03:00:00Z",
        "ctr:regkit-nginx\tc2|sha256:img2|<no value>|false|2026-11-28T03:00:01Z",
        "img:registry:2.8.3\tsha256:img1",
    ]
)


def test_parse_facts() -> None:
    f = deploy.parse_facts(FACTS_OUTPUT)
    assert (f.os, f.apt, f.curl, f.apache2_utils) == ("debian", True, True, False)
    assert f.networks == {"regkit": "false <no value>", "regkit-backend": "true true"}
    assert f.forwarding == "1 -P FORWARD DROP"
    assert f.docker == "20.10.24+dfsg1"
    assert f.disk_free_kb == 5242880
    assert f.files == {"/etc/regkit/ca.crt": "abc123 644 0 0"}
    assert f.containers["regkit-registry"] == Container(
        "c1", "sha256:img1", "spec1", True, "2026-11-28T03:00:00Z"
    )
    assert f.containers["regkit-nginx"].spec == ""
    assert not f.containers["regkit-nginx"].running
    assert f.images == {"registry:2.8.3": "sha256:img1"}


SPEC = RunSpec("regkit-registry", "registry:2.8.3", ("--network", "regkit"))


@pytest.mark.parametrize(
    ("current", "image_id", "expected"),
    [
        (None, "sha256:a", "created"),
        (Container("c", "sha256:a", "other", True, ""), "sha256:a", "recreated: its configuration"),
        (Container("c", "sha256:a", SPEC.digest, True, ""), "sha256:b", "recreated: its image"),
        (Container("c", "sha256:a", SPEC.digest, False, ""), "sha256:a", "started"),
        (Container("c", "sha256:a", SPEC.digest, True, ""), "sha256:a", ""),
    ],
)
def test_container_change(current: Container | None, image_id: str, expected: str) -> None:
    assert deploy.container_change(current, SPEC, image_id).startswith(expected)


def test_run_spec_digest_follows_every_argument() -> None:
    other = RunSpec(SPEC.name, SPEC.image, ("--network", "other"))
    assert SPEC.digest != other.digest
    assert SPEC.digest == RunSpec(SPEC.name, SPEC.image, ("--network", "regkit")).digest
    assert f"--label regkit.spec={SPEC.digest}" in SPEC.docker_run()
    joined = RunSpec(SPEC.name, SPEC.image, SPEC.args, more_networks=("regkit-backend",))
    assert joined.digest != SPEC.digest


def test_a_container_on_two_networks_joins_the_second_before_it_starts() -> None:
    spec = RunSpec("web", "nginx:1", ("--network", "edge", "-p", "443:443"), ("back end",))
    assert spec.docker_run() == (
        f"docker create --name web --label regkit.spec={spec.digest} --network edge -p 443:443 "
        "nginx:1 && docker network connect 'back end' web && docker start web"
    )
    assert SPEC.docker_run() == (
        f"docker run -d --name regkit-registry --label regkit.spec={SPEC.digest} "
        "--network regkit registry:2.8.3"
    )


def test_the_registry_is_only_on_the_internal_network(pki_inv: Inventory) -> None:
    users.set_password(pki_inv, "alice", "correct horse battery")
    reg = deploy.registry_spec(pki_inv, "0" * 64)
    nginx = deploy.nginx_spec(pki_inv, "regkit-nginx:x")
    assert reg.args[reg.args.index("--network") + 1] == "regkit-backend"
    assert reg.args.count("--network") == 1 and not reg.more_networks
    assert "-p" not in reg.args
    assert nginx.more_networks == ("regkit-backend",)
    assert deploy.BACKEND_OPTIONS == (
        "--internal",
        "-o",
        "com.docker.network.bridge.inhibit_ipv4=true",
    )


@pytest.mark.parametrize(
    ("forwarding", "warns"),
    [
        ("1 -P FORWARD ACCEPT", True),
        ("1 -P FORWARD DROP", False),
        ("0 -P FORWARD ACCEPT", False),
        ("1 ", False),
        ("", False),
    ],
)
def test_a_host_that_forwards_into_containers_is_warned_of(forwarding: str, warns: bool) -> None:
    assert bool(deploy.forwarding_warning(Facts(forwarding=forwarding))) is warns


def test_a_backend_network_that_is_not_internal_stops_the_deploy() -> None:
    class Host:
        alias = "regbox"

    facts = Facts(docker="20.10", disk_free_kb=2 * deploy.MIN_FREE_KB)
    inv = Inventory.model_validate({"registry": {"domain": "r.unit.test"}})
    assert deploy.preflight(inv, Host(), facts)  # type: ignore[arg-type]
    facts.networks["regkit-backend"] = "false <no value>"
    with pytest.raises(deploy.RemoteError, match="regkit-backend exists but is not internal"):
        deploy.preflight(inv, Host(), facts)  # type: ignore[arg-type]


def test_wanted_files_modes_and_no_ca_key(pki_inv: Inventory) -> None:
    users.set_password(pki_inv, "alice", "correct horse battery")
    files = {f.path: f for f in deploy.wanted_files(pki_inv)}
    assert files["/etc/regkit/tls/server.key"].mode == 0o600
    assert files["/etc/regkit/registry/config.yml"].mode == 0o600
    auth = files["/etc/regkit/auth/htpasswd"]
    assert (auth.mode, auth.uid, auth.gid) == (0o640, 0, 4430)
    assert auth.content.count(b"\n") == 2
    assert auth.content.startswith(b"alice:$2y$")
    assert b"\nregkit-probe:$2y$" in auth.content
    assert "/etc/docker/certs.d/registry.unit.test/ca.crt" in files
    ca_key = pki.paths(pki_inv).ca_key.read_bytes()
    assert all(f.content != ca_key for f in files.values())
    assert all(b"PRIVATE KEY" not in f.content for p, f in files.items() if "server.key" not in p)


def test_deploy_needs_a_user_first(pki_inv: Inventory) -> None:
    with pytest.raises(users.UsersError, match="no users yet; add one first"):
        deploy.wanted_files(pki_inv)


def test_files_that_match_are_left_alone(pki_inv: Inventory) -> None:
    users.set_password(pki_inv, "alice", "correct horse battery")
    files = deploy.wanted_files(pki_inv)
    facts = Facts(files={f.path: f"{f.digest} {f.stat}" for f in files})
    assert deploy.differing(files, facts) == []
    key = next(f for f in files if f.path.endswith("server.key"))
    facts.files[key.path] = f"{key.digest} 644 0 0"
    assert deploy.differing(files, facts) == [key]


def test_nginx_tag_follows_the_build_context_only(pki_inv: Inventory) -> None:
    users.set_password(pki_inv, "alice", "correct horse battery")
    before = deploy.nginx_tag(deploy.wanted_files(pki_inv))
    users.set_password(pki_inv, "bob", "correct horse battery")
    assert deploy.nginx_tag(deploy.wanted_files(pki_inv)) == before
    assert before.startswith("regkit-nginx:")


def test_stable_probe_credential(inv: Inventory) -> None:
    first = users.probe_credential(inv)
    assert first == users.probe_credential(inv)
    assert first[1].startswith("regkit-probe:$2y$05$")
    assert len(first[0]) >= 43
    assert users.load_empty(inv).from_string(first[1]).check_password(users.PROBE_USER, first[0])


def test_preflight_refuses_a_busy_port(inv: Inventory) -> None:
    facts = Facts(
        docker="27.0",
        disk_free_kb=10**8,
        port_holder='LISTEN 0 511 *:443 users:(("apache2",pid=1))',
    )
    with pytest.raises(deploy.RemoteError, match=r"port 443 is already in use .*apache2"):
        deploy.preflight(inv, _T(), facts)


class _T:
    alias = "regbox"


def test_catalog_table() -> None:
    tags = [
        catalog.Tag(
            "team/app",
            "1.0",
            "sha256:" + "a" * 64,
            5 * 1024 * 1024,
            ["linux/amd64"],
            "2026-11-28T03:00:00.123Z",
        ),
        catalog.Tag(
            "team/multi",
            "2",
            "sha256:" + "b" * 64,
            1234,
            ["linux/amd64", "linux/arm64"],
            index=True,
        ),
    ]
    lines = catalog.table(tags, "registry.unit.test").splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "DIGEST", "SIZE", "PLATFORM", "PUSHED"]
    assert lines[1].split() == [
        "team/app",
        "1.0",
        "sha256:aaaaaaaaaaaa",
        "5.0",
        "MiB",
        "linux/amd64",
        "2026-11-28",
        "03:00:00",
    ]
    assert "index: linux/amd64, linux/arm64" in lines[2]
    assert catalog.table([], "registry.unit.test") == (
        "no repositories yet; push one: docker push registry.unit.test/<name>:<tag>"
    )


@pytest.mark.parametrize(
    ("size", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 * 1024**3, "3.0 GiB")]
)
def test_human_size(size: int, text: str) -> None:
    assert catalog.human_size(size) == text
