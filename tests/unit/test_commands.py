"""The command builders, as exact strings: what runs on a host is what is tested here."""

from __future__ import annotations

import pytest

from tasks import commands
from tasks.wanted import RunSpec


def test_join_quotes_every_argument() -> None:
    assert commands.join("rm", "-f", "/a b", "x;y", "$(z)") == "rm -f '/a b' 'x;y' '$(z)'"


def test_docker_start_runs_a_container_on_one_network() -> None:
    spec = RunSpec("reg", "registry:2.8.3", ("--network", "back", "-v", "/d:/var/lib/registry"))
    assert commands.docker_start(spec) == (
        f"docker run -d --name reg --label regkit.spec={spec.digest} "
        "--network back -v /d:/var/lib/registry registry:2.8.3"
    )


def test_docker_start_joins_more_networks_before_the_container_starts() -> None:
    spec = RunSpec("web", "nginx:1", ("--network", "edge", "-p", "443:443"), ("back end",))
    assert commands.docker_start(spec) == (
        f"docker create --name web --label regkit.spec={spec.digest} --network edge -p 443:443 "
        "nginx:1 && docker network connect 'back end' web && docker start web"
    )


def test_docker_start_passes_the_command_after_the_image() -> None:
    spec = RunSpec("reg", "registry:3", ("--network", "back"), command=("/etc/r/config.yml",))
    assert commands.docker_start(spec) == (
        f"docker run -d --name reg --label regkit.spec={spec.digest} "
        "--network back registry:3 /etc/r/config.yml"
    )
    two = RunSpec("reg", "registry:3", ("--network", "back"), ("edge",), ("/etc/r/config.yml",))
    assert commands.docker_start(two).startswith(
        f"docker create --name reg --label regkit.spec={two.digest} --network back "
        "registry:3 /etc/r/config.yml && "
    )
    assert spec.digest != RunSpec("reg", "registry:3", ("--network", "back")).digest


@pytest.mark.parametrize(
    ("options", "command"),
    [
        ((), "docker network create regkit >/dev/null"),
        (
            ("--internal", "-o", "com.docker.network.bridge.inhibit_ipv4=true"),
            "docker network create --internal -o com.docker.network.bridge.inhibit_ipv4=true "
            "regkit >/dev/null",
        ),
    ],
)
def test_network_create(options: tuple[str, ...], command: str) -> None:
    assert commands.network_create("regkit", options) == command


def test_image_pull() -> None:
    assert commands.image_pull("registry:2.8.3") == "docker pull -q registry:2.8.3 >/dev/null"


def test_image_found_save_and_load() -> None:
    assert commands.image_found("nginx:1.27 x") == (
        "docker image inspect --format '{{.Id}} {{.Size}} {{json .RootFS.Layers}}' 'nginx:1.27 x'"
    )
    assert commands.image_save("registry:2.8.3") == "docker save registry:2.8.3"
    assert commands.image_load() == "docker load -q"


def test_image_build() -> None:
    assert commands.image_build("regkit-nginx:abc", "/etc/regkit/nginx") == (
        "docker build -t regkit-nginx:abc /etc/regkit/nginx"
    )


def test_nginx_test_mounts_the_live_key_and_the_gc_flags_folder() -> None:
    assert commands.nginx_test("regkit-nginx:abc") == (
        "docker run --rm "
        "-v /etc/regkit/tls:/etc/nginx/regkit/tls:ro "
        "-v /etc/regkit/maintenance:/etc/nginx/regkit/maintenance:ro regkit-nginx:abc nginx -t"
    )


def test_maintenance_flag_up_and_down() -> None:
    assert commands.maintenance_flag("gc", True) == (
        "mkdir -p /etc/regkit/maintenance && touch /etc/regkit/maintenance/gc"
    )
    assert commands.maintenance_flag("migrate", False) == "rm -f /etc/regkit/maintenance/migrate"


def test_nginx_reload_tests_first() -> None:
    assert commands.nginx_reload() == (
        "docker exec regkit-nginx nginx -t 2>&1 && docker exec regkit-nginx nginx -s reload"
    )


def test_apt_install_updates_the_lists_only_when_the_first_try_fails() -> None:
    install = "apt-get install -y -q --no-install-recommends apache2-utils"
    assert commands.apt_install("apache2-utils") == (
        "export DEBIAN_FRONTEND=noninteractive\n"
        f"{install} >/dev/null 2>&1 || {{ apt-get update -q >/dev/null && {install} >/dev/null; }}"
    )


def test_remove_files_then_their_folders_if_empty() -> None:
    assert commands.remove_files(["/a", "/b c"], ["/etc/docker/certs.d/r", "/x y"]) == (
        "rm -f /a '/b c'\nrmdir /etc/docker/certs.d/r '/x y' 2>/dev/null\ntrue"
    )


def test_keep_previous_copies_or_clears() -> None:
    assert commands.keep_previous("/etc/c.toml", "/etc/c.toml.prev") == (
        "if [ -e /etc/c.toml ]; then cp -p /etc/c.toml /etc/c.toml.prev; "
        "else rm -f /etc/c.toml.prev; fi"
    )


def test_stage_config_copies_into_the_digest_folder() -> None:
    assert commands.stage_config("/etc/regkit/registry/config.yml", "/etc/regkit/registry/ab") == (
        "mkdir -p /etc/regkit/registry/ab && install -o 0 -g 0 -m 600 "
        "/etc/regkit/registry/config.yml /etc/regkit/registry/ab/config.yml"
    )


def test_read_file() -> None:
    assert commands.read_file("/etc/regkit/nginx/nginx.conf") == (
        "cat /etc/regkit/nginx/nginx.conf"
    )


def test_backup_and_restore_commands() -> None:
    blobs = "/srv/my registry/docker/registry/v2/blobs"
    assert commands.blob_list(blobs) == (
        "cd '/srv/my registry/docker/registry/v2/blobs' 2>/dev/null || exit 0; "
        "find sha256 -path '*/data' -type f -printf '%s %p\\n'"
    )
    assert commands.tar_out(blobs) == (
        "cd '/srv/my registry/docker/registry/v2/blobs' && tar -cf - -T -"
    )
    assert commands.tar_out("/", "etc/regkit") == "cd / && tar -cf - etc/regkit"
    assert commands.tar_in("/srv/my registry") == (
        "mkdir -p '/srv/my registry' && tar -x --same-owner -p -f - -C '/srv/my registry'"
    )
