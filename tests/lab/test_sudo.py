"""A host whose sudo asks for a password: a clear message, then Fabric's ways to give it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.engine import Engine
from lab.hosts import host_spec
from lab.settings import Settings
from tests.lab.conftest import DOMAIN, PASSWORD, USER, Lab, fab, must, sh

SUDO_PASSWORD = "admin-sudo-pw-7731"


@pytest.fixture
def password_sudo(registry: Lab) -> Iterator[Lab]:
    """client2's admin needs a password for sudo for the duration of a test."""
    engine = Engine(Settings())
    container = host_spec("client2").container
    engine.exec(
        container,
        "echo 'admin ALL=(ALL) ALL' > /etc/sudoers.d/admin && chpasswd",
        stdin=f"admin:{SUDO_PASSWORD}\n",
    )
    try:
        yield registry
    finally:
        engine.exec(
            container,
            "echo 'admin ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/admin && usermod -p '*' admin",
        )


def test_missing_sudo_password_is_a_clear_message(password_sudo: Lab) -> None:
    out = fab(password_sudo, "-H", "client2", "untrust-ca")
    assert out.returncode == 1
    assert (
        "[client2] trust: failed (sudo needs a password for admin; run fab with "
        "--prompt-for-sudo-password, or allow passwordless sudo for this user)"
    ) in out.stdout
    assert "Traceback" not in out.stderr


def test_prompted_sudo_password_works(password_sudo: Lab) -> None:
    out = fab(
        password_sudo,
        "--prompt-for-sudo-password",
        "-H",
        "client2",
        "untrust-ca",
        stdin=SUDO_PASSWORD + "\n",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    again = fab(
        password_sudo, "-H", "client2", "trust-ca", env={"FABRIC_SUDO_PASSWORD": SUDO_PASSWORD}
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[client2] system CA store (debian): changed (CA trusted)" in again.stdout
    assert SUDO_PASSWORD not in again.stdout + again.stderr + out.stdout + out.stderr


def test_wrong_sudo_password_is_a_clear_message(password_sudo: Lab) -> None:
    out = fab(
        password_sudo,
        "--prompt-for-sudo-password",
        "-H",
        "client2",
        "trust-ca",
        stdin="not-the-password\n",
    )
    assert out.returncode == 1
    assert "[client2] trust: failed (sudo refused the password" in out.stdout
    must(
        fab(password_sudo, "-H", "client2", "trust-ca", env={"FABRIC_SUDO_PASSWORD": SUDO_PASSWORD})
    )


def test_a_sudo_password_for_a_host_that_needs_none(registry: Lab) -> None:
    """sudo does not ask there: the password must not end up in what a root script reads."""
    env = {"FABRIC_SUDO_PASSWORD": SUDO_PASSWORD}
    must(fab(registry, "-H", "client1", "untrust-ca", env=env))
    sh(registry.connect("client1"), f"docker logout {DOMAIN} >/dev/null")
    out = fab(
        registry,
        "-H",
        "client1",
        "trust-ca",
        "--login",
        USER,
        "--password-stdin",
        stdin=PASSWORD + "\n",
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[client1] system CA store (debian): changed (CA trusted)" in out.stdout
    assert "[client1] docker login: changed" in out.stdout
    assert SUDO_PASSWORD not in out.stdout + out.stderr
