"""Security (issue #9): no path open without a login, no secret in inspect, CA key at home."""

from __future__ import annotations

import pytest

from tasks import pki
from tests.lab.conftest import (
    DOMAIN,
    Lab,
    Pushed,
    login,
    must,
    pull_digest,
    push_image,
    sh,
    trust_by_certs_d,
)

CA_FILE = f"/etc/docker/certs.d/{DOMAIN}/ca.crt"
HOSTS = ("regbox", "client1", "client2", "b2d")


@pytest.fixture(scope="module")
def image(registry: Lab) -> Pushed:
    c1 = registry.connect("client1")
    trust_by_certs_d(registry, c1)
    login(c1)
    return push_image(c1)


@pytest.mark.parametrize(
    "path",
    [
        "/v2/",
        "/v2/_catalog",
        "/v2/{repo}/tags/list",
        "/v2/{repo}/manifests/{digest}",
        "/v2/{repo}/blobs/{digest}",
        "/",
        "/ui/app.js",
        "/anything",
    ],
)
@pytest.mark.parametrize("auth", ["", "-u nobody:wrong-password-1", "-u alice:wrong-password-1"])
def test_nothing_answers_without_a_valid_login(
    registry: Lab, image: Pushed, path: str, auth: str
) -> None:
    repo = image.ref.removeprefix(f"{DOMAIN}/").split(":")[0]
    url = f"https://{DOMAIN}" + path.format(repo=repo, digest=image.digest)
    out = sh(
        registry.connect("client1"),
        f"curl -s -o /dev/null -D - --cacert {CA_FILE} {auth} '{url}' | tr -d '\\r'",
    )
    assert out.splitlines()[0].split()[1] == "401", out
    assert "Strict-Transport-Security: max-age=63072000" in out
    if path.startswith("/v2/"):
        assert "Docker-Distribution-Api-Version: registry/2.0" in out


def test_ping_answers_without_a_login(registry: Lab) -> None:
    out = sh(registry.connect("client1"), f"curl -s --cacert {CA_FILE} https://{DOMAIN}/_ping")
    assert out == "ok"


def test_no_secret_in_docker_inspect(registry: Lab, image: Pushed) -> None:
    secrets = [
        pki.paths(registry.inventory).server_key.read_text().splitlines()[1],
        (registry.inventory.state_path / "http-secret").read_text().strip(),
        (registry.inventory.state_path / "probe-password").read_text().strip(),
    ]
    inspected = sh(registry.connect("regbox"), "docker inspect regkit-registry regkit-nginx")
    for secret in secrets:
        assert secret not in inspected
    assert '"Env": [' in inspected and '"Cmd": [' in inspected and '"Labels": {' in inspected


def test_ca_key_never_leaves_the_operator_machine(registry: Lab) -> None:
    key_line = pki.paths(registry.inventory).ca_key.read_text().splitlines()[1]
    for alias in HOSTS:
        found = sh(
            registry.connect(alias),
            f"grep -r -l -F -e '{key_line}' /etc /var/lib/boot2docker /root /home /tmp "
            "2>/dev/null | head -1; true",
        )
        assert found == "", f"{alias}: {found}"
    must_exist = sh(registry.connect("regbox"), "ls /etc/regkit/tls/server.key")
    assert must_exist == "/etc/regkit/tls/server.key"


def test_regbox_reboot_brings_everything_back(registry: Lab, image: Pushed) -> None:
    must(registry.invoke("lab.reboot", "regbox"))
    registry.reload()
    c2 = registry.connect("client2")
    trust_by_certs_d(registry, c2)
    login(c2)
    assert pull_digest(c2, image) == image.digest
