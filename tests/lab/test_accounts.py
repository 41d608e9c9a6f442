"""`fab adduser` / `deluser` / `users` against the lab: live changes, no restart, no leaks."""

from __future__ import annotations

import io
import subprocess
import threading
import time

import pytest

from tasks import users
from tasks.remote.lock import host_lock
from tests.lab.conftest import (
    DOMAIN,
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
    target,
    trust_by_certs_d,
    watch_processes,
)

BOB, BOB_PASSWORD = "bob", "Zebra-unique-pw-8812"
BIG_MIB = 256


def nginx_identity(lab: Lab) -> str:
    return sh(
        lab.connect("regbox"),
        "docker inspect --format '{{.Id}} {{.State.StartedAt}} {{.RestartCount}}' regkit-nginx",
    )


def login_as(lab: Lab, alias: str, user: str, password: str) -> subprocess.CompletedProcess[str]:
    conn = lab.connect(alias)
    result = conn.run(
        f"sudo -n docker login -u {user} --password-stdin {DOMAIN}",
        hide=True,
        warn=True,
        in_stream=io.StringIO(password + "\n"),
    )
    return subprocess.CompletedProcess(result.command, result.exited, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def big_image(registry: Lab) -> Pushed:
    """A large single-layer image pushed from client1, for pulls that take a while."""
    c1 = registry.connect("client1")
    trust_by_certs_d(registry, c1)
    login(c1)
    ref = f"{DOMAIN}/team/big:{BIG_MIB}m"
    out = sh(
        c1,
        f"d=$(mktemp -d) && head -c {BIG_MIB}M /dev/urandom > $d/blob && "
        "printf 'FROM scratch\\nCOPY blob /blob\\n' > $d/Dockerfile && "
        f"docker build -q -t {ref} $d >/dev/null && docker push {ref} && rm -rf $d",
    )
    return Pushed(ref, next(w for w in out.split() if w.startswith("sha256:")))


def test_adduser_during_a_large_pull_keeps_nginx_and_the_pull(
    registry: Lab, big_image: Pushed
) -> None:
    c2 = registry.connect("client2")
    trust_by_certs_d(registry, c2)
    login(c2)
    sh(c2, f"docker rmi -f {big_image.ref} >/dev/null 2>&1; true")
    before = nginx_identity(registry)
    pulled: dict[str, str] = {}
    puller = threading.Thread(target=lambda: pulled.update(digest=pull_digest(c2, big_image)))
    puller.start()
    time.sleep(1)
    assert puller.is_alive(), "the pull ended before adduser started; make the image larger"

    with watch_processes(registry, "regbox") as seen:
        out = fab(
            registry, "adduser", "--username", BOB, "--password-stdin", stdin=BOB_PASSWORD + "\n"
        )
    puller.join(timeout=600)

    assert out.returncode == 0, out.stdout + out.stderr
    assert "[local] user bob: changed (added, bcrypt, push on *)" in out.stdout
    assert "[regbox] password file and rights: changed" in out.stdout
    assert "[regbox] login check for bob: ok (a token, and /v2/ answers 200 with it)" in out.stdout
    assert pulled.get("digest") == big_image.digest
    assert nginx_identity(registry) == before
    assert BOB_PASSWORD not in out.stdout + out.stderr
    # The watchers saw the task's own commands, and never the password.
    assert "adduser" in seen["local"] and BOB_PASSWORD not in seen["local"]
    assert "--cacert /etc/regkit/ca.crt" in seen["remote"]
    assert BOB_PASSWORD not in seen["remote"]

    assert "Login Succeeded" in login_as(registry, "client1", BOB, BOB_PASSWORD).stdout
    assert push_image(registry.connect("client1")).digest.startswith("sha256:")


def test_changing_a_password_says_updated(registry: Lab) -> None:
    new = BOB_PASSWORD + "-2"
    out = must(fab(registry, "adduser", "--username", BOB, "--password-stdin", stdin=new + "\n"))
    assert "[local] user bob: changed (updated, bcrypt, push on *)" in out
    assert login_as(registry, "client1", BOB, BOB_PASSWORD).returncode != 0
    assert "Login Succeeded" in login_as(registry, "client1", BOB, new).stdout


def test_adduser_waits_for_no_other_task_on_the_host(registry: Lab) -> None:
    """While a deploy (here: its lock) holds regbox, adduser changes nothing there."""
    before = sh(registry.connect("regbox"), "sha256sum < /etc/regkit/auth/htpasswd")
    with host_lock(target(registry, "regbox"), "deploy"):
        out = fab(registry, "adduser", "--username", "carol", "--password-stdin",
                  stdin="carol-lab-password-1\n")  # fmt: skip
        assert out.returncode == 1
        assert "[regbox] adduser: failed (busy: deploy from " in out.stdout
        assert sh(registry.connect("regbox"), "sha256sum < /etc/regkit/auth/htpasswd") == before
    again = must(fab(registry, "deluser", "carol", "--yes"))
    assert "[regbox] carol removed: ok" in again


def test_users_lists_and_flags_a_differing_host(registry: Lab) -> None:
    out = must(fab(registry, "users"))
    rows = [line.split() for line in out.splitlines()]
    assert [USER, "user", "push", "*", "bcrypt", "local"] in rows
    assert [BOB, "user", "push", "*", "bcrypt", "local"] in rows
    assert "[regbox] password and rights files: ok (same as local)" in out
    regbox = registry.connect("regbox")
    sh(regbox, "echo 'intruder:$2y$10$abc' >> /etc/regkit/auth/htpasswd")
    flagged = fab(registry, "users")
    assert flagged.returncode != 0
    assert (
        "[regbox] users: failed (/etc/regkit/auth/htpasswd differs from local state)"
        in flagged.stdout
    )
    must(fab(registry, "-H", "regbox", "deploy"))
    assert "same as local" in must(fab(registry, "users"))


def test_deluser_then_login_gets_401_and_others_are_unaffected(registry: Lab) -> None:
    out = must(fab(registry, "deluser", BOB, "--yes"))
    assert "[local] user bob: changed (removed)" in out
    assert "[regbox] bob removed: ok" in out
    refused = login_as(registry, "client1", BOB, BOB_PASSWORD + "-2")
    assert refused.returncode != 0
    assert "unauthorized: authentication required" in refused.stderr
    assert "Login Succeeded" in login_as(registry, "client1", USER, PASSWORD).stdout


def test_last_user_is_kept(registry: Lab) -> None:
    before = users.password_file(registry.inventory).read_bytes()
    out = fab(registry, "deluser", USER, "--yes")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        f"error: '{USER}' is the last user; a registry nobody can log into is refused. "
        "Add another user first"
    )
    assert users.password_file(registry.inventory).read_bytes() == before


@pytest.mark.parametrize(
    ("username", "stdin", "message"),
    [
        ("a:b", "long-enough-password\n", "contains ':'"),
        ("has space", "long-enough-password\n", "whitespace or a control character"),
        ("carol", "\n", "the password is empty"),
        ("carol", "short\n", "too short"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    registry: Lab, username: str, stdin: str, message: str
) -> None:
    before = users.password_file(registry.inventory).read_bytes()
    out = fab(registry, "adduser", "--username", username, "--password-stdin", stdin=stdin)
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr
    assert "Traceback" not in out.stderr
    assert users.password_file(registry.inventory).read_bytes() == before
