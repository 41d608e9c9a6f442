"""Security (issue #9): no path open without a login, no secret in inspect, CA key at home."""

from __future__ import annotations

from pathlib import Path

import fabric
import pytest

from tasks import pki, state, users
from tests.lab.conftest import (
    CA_FILE,
    DOMAIN,
    PASSPHRASE,
    PASSWORD,
    USER,
    Lab,
    Pushed,
    fab,
    login,
    must,
    pull_digest,
    push_image,
    sh,
    trust_by_certs_d,
    wait_for_registry,
)

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
    def search(alias: str, key: Path) -> str:
        line = key.read_text().splitlines()[1]
        return sh(
            registry.connect(alias),
            f"grep -r -l -F -e '{line}' /etc /var/lib/boot2docker /root /home /tmp "
            "2>/dev/null | head -1; true",
        )

    p = pki.paths(registry.inventory)
    for alias in HOSTS:
        found = search(alias, p.ca_key)
        assert found == "", f"{alias}: {found}"
    # The same search finds the server key, which is meant to be on regbox.
    assert search("regbox", p.server_key) == "/etc/regkit/tls/server.key"


def test_regbox_reboot_brings_everything_back(registry: Lab, image: Pushed) -> None:
    must(registry.invoke("lab.reboot", "regbox"))
    registry.reload()
    c2 = registry.connect("client2")
    trust_by_certs_d(registry, c2)
    # The boot is over when sshd greets; dockerd then restarts the containers by their policy.
    wait_for_registry(c2)
    login(c2)
    assert pull_digest(c2, image) == image.digest


def test_no_secret_in_task_output_at_any_verbosity(registry: Lab, image: Pushed) -> None:
    """Fabric's --debug and --echo on every task that handles a secret."""
    inv = registry.inventory
    p = pki.paths(inv)
    key_lines = [line for line in p.server_key.read_text().splitlines() if "-----" not in line]
    hashes = [line.split(":", 1)[1] for line in users.password_file(inv).read_text().splitlines()]
    secrets = {
        "the user's password": PASSWORD,
        "a new user's password": "bob-verbose-password-1",
        "the CA passphrase": PASSPHRASE,
        "the probe's password": users.probe_credential(inv)[0],
        "the registry's http secret": state.http_secret(inv.state_path),
        **{f"an htpasswd hash ({i})": h for i, h in enumerate(hashes)},
        **{f"a line of the server key ({i})": line for i, line in enumerate(key_lines)},
    }
    runs = [
        fab(registry, "-d", "-e", "-H", "regbox", "adduser", "--username", "bob",
            "--password-stdin", stdin="bob-verbose-password-1\n"),
        fab(registry, "-d", "-e", "-H", "client1", "trust-ca", "--login", USER,
            "--password-stdin", stdin=PASSWORD + "\n"),
        fab(registry, "-d", "-e", "-H", "regbox", "deploy"),
        fab(registry, "-d", "-e", "-H", "regbox", "deploy", "--dry-run"),
        fab(registry, "-d", "-e", "-H", "regbox", "deluser", "bob", "--yes"),
        fab(registry, "-d", "-e", "-H", "regbox", "status"),
    ]  # fmt: skip
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
    output = "\n".join(run.stdout + run.stderr for run in runs)
    assert "paramiko.transport" in output  # the debug log is there, and was searched
    leaked = [what for what, secret in secrets.items() if secret in output]
    assert leaked == []


def _addresses(conn: fabric.Connection, container: str) -> dict[str, str]:
    """network name -> the container's IPv4 address on it."""
    fmt = "{{range $n, $e := .NetworkSettings.Networks}}{{$n}}={{$e.IPAddress}} {{end}}"
    out = sh(conn, f"docker inspect --format '{fmt}' {container}")
    return dict(pair.split("=", 1) for pair in out.split())


def test_a_neighbour_that_routes_to_the_registry_reaches_nothing(registry: Lab) -> None:
    """Issue #22.1: client1 routes the registry container's address through regbox, whose
    FORWARD policy is ACCEPT: nothing answers on the registry's port. nginx's address, on
    the network its port is published through, answers through the same route, so the
    route itself works."""
    regbox, client1 = registry.connect("regbox"), registry.connect("client1")
    reg_ip = _addresses(regbox, "regkit-registry")["regkit-backend"]
    nginx_ip = _addresses(regbox, "regkit-nginx")["regkit"]
    regbox_ip = sh(regbox, "ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1")
    # Whatever regbox routes out of its own uplink stays in the lab: only routes into
    # its bridges are under test.
    keep_in = f"FORWARD -o eth0 -d {reg_ip} -j DROP"
    policy = sh(regbox, "iptables -S FORWARD | head -1").split()[-1]
    sh(regbox, f"iptables -P FORWARD ACCEPT && iptables -I {keep_in}")
    routes = [f"{reg_ip}/32 via {regbox_ip}", f"{nginx_ip}/32 via {regbox_ip}"]
    try:
        sh(client1, " && ".join(f"ip route replace {r}" for r in routes))
        nginx = sh(
            client1, f"curl -sk -m 5 -o /dev/null -w '%{{http_code}}' https://{nginx_ip}/v2/"
        )
        assert nginx == "401"
        for path in ("/v2/_catalog", "/v2/team/app/blobs/uploads/"):
            answer = sh(
                client1,
                f"curl -sS -m 3 -X POST -o /dev/null -w '%{{http_code}}' "
                f"http://{reg_ip}:5000{path} 2>&1; true",
            )
            assert "timed out" in answer or "No route" in answer, answer
        # regbox itself has no address on the registry's network, so no route into it.
        bridge = "br-" + sh(regbox, "docker network inspect --format '{{.Id}}' regkit-backend")[:12]
        assert sh(regbox, f"ip -4 -o addr show dev {bridge}") == ""
        assert bridge not in sh(regbox, f"ip route get {reg_ip}")
    finally:
        sh(client1, "; ".join(f"ip route del {r.split()[0]}" for r in routes) + "; true")
        sh(regbox, f"iptables -D {keep_in} && iptables -P FORWARD {policy}")
