"""The lab's hosts are real: sshd with pinned keys, sudo, dockerd, isolated disks; and
with --all, node1 (containerd) and pod1 (podman), without Docker, and hub, the lab's
Docker Hub, which the inventory's mirror caches."""

from __future__ import annotations

import datetime
import re
import shlex

import fabric
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lab import hub
from lab.engine import Engine
from lab.settings import Settings
from lab.store import lab_ip
from tasks.errors import RemoteError
from tests.lab.conftest import Lab, must, sh

ALIASES = ("regbox", "client1", "client2", "b2d")
DOCKER_HOSTS = ("regbox", "client1", "client2")
# The optional hosts the inventory lists when they run (store never is), and those
# of them that run another engine than Docker.
OPTIONAL = ("node1", "pod1", "regbox2")
ENGINES = ("node1", "pod1")


def test_inventory_names_the_four_hosts(lab: Lab) -> None:
    inv = lab.inventory
    assert inv.registry.domain == "registry.lab.test"
    assert list(inv.hosts)[: len(ALIASES)] == list(ALIASES)
    assert set(inv.hosts) - set(ALIASES) <= set(OPTIONAL), "optional hosts, if they run"
    assert inv.with_role("registry") in (["regbox"], ["regbox", "regbox2"])
    assert {inv.hosts[a].flavor for a in DOCKER_HOSTS} == {"debian"}
    assert inv.hosts["b2d"].flavor == "boot2docker"
    for alias in ALIASES:
        host = inv.hosts[alias]
        assert host.hostname == "127.0.0.1"
        assert host.host_key and host.host_key.startswith("ssh-ed25519 ")
    assert len({h.host_key for h in inv.hosts.values()}) == len(inv.hosts), "host keys are shared"


@pytest.mark.parametrize("alias", ALIASES)
def test_fabric_runs_over_ssh_with_the_pinned_key(lab: Lab, alias: str) -> None:
    with lab.connect(alias) as conn:
        result = conn.run("id -un; hostname", hide=True)
    user, hostname = result.stdout.split()
    assert user == lab.inventory.hosts[alias].user
    assert hostname == alias


@pytest.mark.parametrize("alias", DOCKER_HOSTS)
def test_docker_answers_through_sudo_only(lab: Lab, alias: str) -> None:
    with lab.connect(alias) as conn:
        info = conn.sudo("docker info --format '{{.ServerVersion}} {{.Driver}}'", hide=True)
        assert re.match(r"^20\.10\.\S+ overlay2$", info.stdout.strip())
        groups = conn.run("id -Gn", hide=True).stdout.split()
        assert "docker" not in groups
        assert conn.run("docker info", hide=True, warn=True).failed


def test_docker_run_works_inside_regbox(lab: Lab) -> None:
    refs = lab.inventory.registry.images
    with lab.connect("regbox") as conn:
        version = conn.sudo(f"docker run --rm {refs.registry} docker-registry --version", hide=True)
        assert " 2.8." in version.stdout
        nginx = conn.sudo(f"docker run --rm {refs.nginx} nginx -v", hide=True)
        assert "nginx/1.22" in nginx.stderr + nginx.stdout


def test_registry_image_serves_like_registry_2(lab: Lab) -> None:
    ref = lab.inventory.registry.images.registry
    probe = "exec 3<>/dev/tcp/127.0.0.1/5000; printf 'GET /v2/ HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"
    with lab.connect("regbox") as conn:
        conn.sudo(f"docker run -d --name lab-test-registry -p 127.0.0.1:5000:5000 {ref}", hide=True)
        try:
            reply = conn.run(
                f"for i in $(seq 50); do bash -c {_q(probe)} 2>/dev/null && break; sleep 0.2; done",
                hide=True,
            )
            assert reply.stdout.startswith("HTTP/1.0 200")
            assert "registry/2.0" in reply.stdout
            layout = "{{json .Config.Entrypoint}} {{json .Config.Cmd}} {{.Config.Volumes}}"
            conf = conn.sudo(f"docker inspect --format '{layout}' {ref}", hide=True)
            assert conf.stdout.startswith('["/entrypoint.sh"] ["/etc/docker/registry/config.yml"]')
            assert "/var/lib/registry" in conf.stdout
        finally:
            conn.sudo("docker rm -f lab-test-registry", hide=True, warn=True)


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def wait_for_dockerd(conn: fabric.Connection, sudo: bool = False) -> None:
    """Until ``docker info`` answers, up to 60 s; fails the test after. An init script
    returns once dockerd is started, not once it answers (trust-ca's restart waits the
    same way)."""
    wait = (
        "i=0; until docker info >/dev/null 2>&1; do "
        "i=$((i+1)); [ $i -lt 300 ] || exit 1; sleep 0.2; done"
    )
    (conn.sudo if sudo else conn.run)(f"sh -c {shlex.quote(wait)}", hide=True)


def test_b2d_is_boot2docker_without_apt(lab: Lab) -> None:
    with lab.connect("b2d") as conn:
        assert "ID=boot2docker" in conn.run("cat /etc/os-release", hide=True).stdout.split()
        assert conn.run("command -v apt-get", hide=True, warn=True).failed
        assert conn.run("command -v dpkg", hide=True, warn=True).failed
        assert "docker" in conn.run("id -Gn", hide=True).stdout.split()
        assert conn.run("docker info --format '{{.ServerVersion}}'", hide=True).ok
        before = conn.run("pidof dockerd", hide=True).stdout.strip()
        conn.sudo("/etc/init.d/docker restart", hide=True)
        wait_for_dockerd(conn)
        assert conn.run("pidof dockerd", hide=True).stdout.strip() not in ("", before)


def test_service_docker_restart_really_restarts_dockerd(lab: Lab) -> None:
    with lab.connect("client1") as conn:
        before = conn.run("pidof dockerd", hide=True).stdout.strip()
        conn.sudo("service docker restart", hide=True)
        after = conn.run("pidof dockerd", hide=True).stdout.strip()
        assert after and after != before
        wait_for_dockerd(conn, sudo=True)


def test_registry_domain_resolves_to_a_registry_host_on_every_host(lab: Lab) -> None:
    own: set[str] = set()
    registries = lab.inventory.with_role("registry")
    for registry in registries:
        with lab.connect(registry) as conn:
            own |= set(conn.run("hostname -i", hide=True).stdout.split())
    for alias in ALIASES:
        # A deployed registry host names itself (deploy's line in its /etc/hosts).
        itself = {"127.0.0.1"} if alias in registries else set()
        with lab.connect(alias) as conn:
            out = conn.run("getent hosts registry.lab.test", hide=True).stdout.split()
            assert out[0] in own | itself, f"{alias} resolves registry.lab.test to {out[0]}"


def test_hosts_are_isolated(lab: Lab) -> None:
    marker = "/etc/regkit-lab-isolation"
    with lab.connect("client1") as one, lab.connect("client2") as two:
        try:
            one.sudo(f"sh -c 'echo client1 > {marker}'", hide=True)
            assert one.run(f"cat {marker}", hide=True).stdout.strip() == "client1"
            assert two.run(f"test -e {marker}", hide=True, warn=True).failed
        finally:
            one.sudo(f"rm -f {marker}", hide=True)


def test_a_wrong_pinned_host_key_is_refused(lab: Lab) -> None:
    inv = lab.inventory
    wrong = inv.hosts["client1"].model_copy(update={"host_key": inv.hosts["client2"].host_key})
    bad = inv.model_copy(update={"hosts": {**inv.hosts, "client1": wrong}})
    with pytest.raises(RemoteError, match="host key mismatch"):
        lab.connect("client1", bad)


def test_fab_reads_the_lab_inventory(lab: Lab) -> None:
    out = must(lab.invoke("inventory.check"))
    assert "valid" in out
    assert "b2d" in out


def _self_signed_ca() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "regkit lab test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_reboot_b2d_keeps_only_its_persistent_disk(lab: Lab) -> None:
    pem = _self_signed_ca().decode()
    body = "".join(pem.strip().splitlines()[1:-1])
    with lab.connect("b2d") as conn:
        conn.sudo("mkdir -p /var/lib/boot2docker/certs", hide=True)
        conn.run(f"printf %s {_q(pem)} > /tmp/lab-ca.pem", hide=True)
        conn.sudo("mv /tmp/lab-ca.pem /var/lib/boot2docker/certs/lab-ca.pem", hide=True)
        conn.sudo("sh -c 'echo kept > /var/lib/boot2docker/lab-marker'", hide=True)
        conn.sudo("sh -c 'echo lost > /etc/lab-marker'", hide=True)
        bundle = conn.run("cat /etc/ssl/certs/ca-certificates.crt", hide=True).stdout
        assert body[:64] not in bundle.replace("\n", "")
    out = must(lab.invoke("lab.reboot", "b2d"))
    assert "[b2d] reboot: changed" in out
    with lab.connect("b2d") as conn:
        assert conn.run("cat /var/lib/boot2docker/lab-marker", hide=True).stdout.strip() == "kept"
        assert conn.run("test -e /etc/lab-marker", hide=True, warn=True).failed
        bundle = conn.run("cat /etc/ssl/certs/ca-certificates.crt", hide=True).stdout
        assert body[:64] in bundle.replace("\n", "")
        wait_for_dockerd(conn)
        conn.sudo("rm -rf /var/lib/boot2docker/certs /var/lib/boot2docker/lab-marker", hide=True)


def test_reboot_docker_host_keeps_disk_and_restarts_containers(lab: Lab) -> None:
    ref = lab.inventory.registry.images.nginx
    with lab.connect("regbox") as conn:
        conn.sudo("sh -c 'echo kept > /etc/lab-marker'", hide=True)
        conn.sudo(
            f"docker run -d --restart=always --name lab-test-sleeper {ref} sleep 3600", hide=True
        )
    try:
        out = must(lab.invoke("lab.reboot", "regbox"))
        assert "[regbox] reboot: changed" in out
        with lab.connect("regbox") as conn:
            assert conn.run("cat /etc/lab-marker", hide=True).stdout.strip() == "kept"
            state = conn.sudo(
                "sh -c 'for i in $(seq 60); do "
                "s=$(docker inspect -f {{.State.Running}} lab-test-sleeper); "
                '[ "$s" = true ] && break; sleep 0.5; done; echo $s\'',
                hide=True,
            )
            assert state.stdout.strip() == "true"
    finally:
        with lab.connect("regbox") as conn:
            conn.sudo("docker rm -f lab-test-sleeper", hide=True, warn=True)
            conn.sudo("rm -f /etc/lab-marker", hide=True)


def test_status_shows_every_host(lab: Lab) -> None:
    out = must(lab.invoke("lab.status"))
    for alias in ALIASES:
        assert re.search(
            rf"{alias}\s+running, ssh 127\.0\.0\.1:\d+ answers, docker \S+ answers", out
        )


def test_second_up_changes_nothing(lab: Lab) -> None:
    out = must(lab.invoke("lab.up"))
    assert out.rstrip().endswith("no changes")
    assert "image regkit-lab/host: unchanged (cached" in out


def test_reboot_of_an_unknown_host_is_one_clear_line(lab: Lab) -> None:
    proc = lab.invoke("lab.reboot", "nosuch")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: 'nosuch' is not a lab host; the lab's hosts are regbox, client1, client2, b2d "
        "(and client3, client4, ... with --clients; node1, pod1 with --all; "
        "store, regbox2 with --scale-out or --all)"
    ]


def test_all_adds_the_optional_hosts_and_a_plain_up_leaves_them(all_hosts: Lab) -> None:
    inv = all_hosts.inventory
    assert list(inv.hosts)[-3:] == list(OPTIONAL)
    assert inv.hosts["regbox2"].role == "registry"
    for alias in ENGINES:
        host = inv.hosts[alias]
        assert (host.user, host.role, host.flavor) == ("admin", "client", "debian")
        with all_hosts.connect(alias) as conn:
            assert conn.run("id -un; hostname", hide=True).stdout.split() == ["admin", alias]
            assert conn.run("command -v docker", hide=True, warn=True).failed
            assert conn.run("sudo -n ls /root", hide=True, warn=True).ok
    status = must(all_hosts.invoke("lab.status"))
    assert re.search(r"node1\s+running, ssh \S+ answers, containerd 1\.6\.\S+ answers", status)
    assert re.search(r"pod1\s+running, ssh \S+ answers, podman 4\.\S+ answers", status)
    assert re.search(r"hub\s+running, https://\S+ \(hub\.lab\.test\) answers", status)
    mirror = inv.registry.mirror
    assert mirror is not None and mirror.ca_file == "state/hub-ca.crt"
    assert mirror.upstream == f"https://{lab_ip(Engine(Settings()), hub.CONTAINER)}"
    out = must(all_hosts.invoke("lab.up"))
    for alias in OPTIONAL:
        assert f"[{alias}] host: unchanged (optional, running: left as it is" in out
    assert out.rstrip().endswith("no changes")
    all_hosts.reload()
    assert list(all_hosts.inventory.hosts)[-3:] == list(OPTIONAL)


def test_node1_runs_containerd_for_root_only(all_hosts: Lab) -> None:
    with all_hosts.connect("node1") as conn:
        version = sh(conn, "ctr version | sed -n '/^Server:/,$ s/^ *Version: *//p'")
        assert version.startswith("1.6.")
        plugins = sh(conn, "ctr plugins ls")
        assert re.search(r"^io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok$", plugins, re.MULTILINE)
        sh(conn, "ctr images ls")
        assert conn.run("ctr version", hide=True, warn=True).failed, "the socket is root's"
        before = sh(conn, "pidof containerd")
        sh(conn, "service containerd restart")
        assert sh(conn, "pidof containerd") not in ("", before)
        assert "is running" in sh(conn, "ctr version >/dev/null && service containerd status")


def test_node1_reboot_starts_containerd_and_keeps_its_data(all_hosts: Lab) -> None:
    with all_hosts.connect("node1") as conn:
        sh(conn, "ctr namespaces create lab-test-kept")
    try:
        assert "[node1] reboot: changed" in must(all_hosts.invoke("lab.reboot", "node1"))
        with all_hosts.connect("node1") as conn:
            assert "lab-test-kept" in sh(conn, "ctr namespaces ls -q").split()
    finally:
        with all_hosts.connect("node1") as conn:
            sh(conn, "ctr namespaces rm lab-test-kept")


def test_pod1_builds_with_buildah_and_podman_sees_it(all_hosts: Lab) -> None:
    with all_hosts.connect("pod1") as conn:
        driver = sh(conn, "podman info --format '{{.Store.GraphDriverName}}'")
        assert driver == "overlay"
        assert sh(conn, "skopeo --version").startswith("skopeo version 1.9.")
        ref = "localhost/lab-test/tiny:1"
        built = sh(
            conn,
            "d=$(mktemp -d) && echo tiny > $d/tiny.txt && c=$(buildah from scratch) && "
            f"buildah copy $c $d/tiny.txt /tiny.txt >/dev/null && buildah commit -q $c {ref} && "
            "buildah rm $c >/dev/null && rm -rf $d",
        )
        try:
            assert sh(conn, f"podman image inspect --format '{{{{.Id}}}}' {ref}") == built
        finally:
            sh(conn, f"podman rmi {ref}")
