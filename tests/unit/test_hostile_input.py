"""Names, passwords and inventory values regkit cannot honour, or that would do harm
(#22, points 4, 6 and 7): each is refused by the real entry point in one line that says
where, with no traceback, and nothing is changed."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tasks import certificates, inventory, mirror, state, users
from tasks.errors import InventoryError, StateError
from tasks.inventory_checks import UB_COMMON_NAME
from tests.unit.conftest import base_inventory

ROOT = Path(__file__).resolve().parents[2]
INVOKE = [sys.executable, "-m", "invoke"]
GOOD = "correct horse battery"
ESC = "\x1b"


@dataclass(frozen=True)
class Hostile:
    """One hostile value: an inventory change checked by ``inventory.check``, or a
    ``users.add --password-stdin`` run; ``where`` starts the error line (after the
    inventory's path, for an inventory value), ``why`` is in it."""

    where: str
    why: str
    change: dict[str, Any] = field(default_factory=dict)
    username: str = ""
    stdin: str = GOOD + "\n"


def inv_case(key: str, value: Any, why: str, where: str = "") -> Hostile:
    return Hostile(where or key, why, change={key: value})


def user_case(username: str, why: str) -> Hostile:
    return Hostile("the username ", why, username=username)


def stdin_case(stdin: str) -> Hostile:
    return Hostile("--password-stdin: ", "standard input holds more than one line",
                   username="alice", stdin=stdin)  # fmt: skip


SYSTEM = "a system folder"
DATA_DIRS = ["/etc/ssl", "/var/lib/docker", "/var/lib", "/var/tmp", "/usr/local", "/etc/regkit"]
SHALLOW = ["/", "/etc", "/usr", "/home", "/var", "/srv"]  # refused by the path rule already
HOSTILE = [
    # 6: names and passwords users.add accepted but could not honour.
    pytest.param(user_case("#alice", "starts with '#', which makes its line a comment"),
                 id="user-#alice"),
    pytest.param(user_case("d\u0435mo", "'d\u0435mo' is not allowed; use lowercase letters a-z"),
                 id="user-cyrillic-lookalike"),
    pytest.param(user_case(unicodedata.normalize("NFC", "zoë"), "is not allowed"), id="user-nfc"),
    pytest.param(user_case(unicodedata.normalize("NFD", "zoë"), "is not allowed"), id="user-nfd"),
    pytest.param(user_case("Alice", "is not allowed; use lowercase letters"), id="user-case-twin"),
    pytest.param(stdin_case(GOOD + "\nsecond line\n"), id="password-two-lines"),
    pytest.param(stdin_case(GOOD + "\n\n"), id="password-blank-second-line"),
    pytest.param(stdin_case(GOOD + "\r\nsecond line"), id="password-two-lines-crlf"),
    # 7: inventory values inventory.check passed.
    pytest.param(inv_case("state_dir", "/tmp", SYSTEM), id="state_dir-/tmp"),
    *(pytest.param(inv_case("state_dir", d, SYSTEM), id=f"state_dir-{d}")
      for d in ["/", "/etc", "/usr", "/var/tmp", "/var/lib/docker", "/proc/self"]),
    pytest.param(inv_case("state_dir", "~", "the home folder"), id="state_dir-home"),
    *(pytest.param(inv_case("registry.data_dir", d, SYSTEM), id=f"data_dir-{d}")
      for d in DATA_DIRS),
    *(pytest.param(inv_case("registry.data_dir", d, "at least two folders deep"),
                   id=f"data_dir-{d}") for d in SHALLOW),
    pytest.param(inv_case("registry.data_dir", "/etc/ssl/private", "inside /etc"),
                 id="data_dir-in-/etc"),
    pytest.param(inv_case("registry.data_dir", "/var/lib/docker/volumes/x",
                          "inside /var/lib/docker"), id="data_dir-in-docker"),
    pytest.param(inv_case("registry.mirror", {"data_dir": "/etc/ssl"}, SYSTEM,
                          "registry.mirror.data_dir"), id="mirror-data_dir-/etc/ssl"),
    pytest.param(inv_case("hosts.regbox.hostname", "root@127.0.0.1:2222",
                          "put the user in 'user:' and the port in 'port:'"),
                 id="hostname-user@host:port"),
    pytest.param(inv_case("hosts.regbox.hostname", "127.0.0.1:2222", "the port in 'port:'"),
                 id="hostname-host:port"),
    pytest.param(inv_case("hosts.regbox.hostname", "bad host", "not a DNS name or an IP"),
                 id="hostname-space"),
    pytest.param(inv_case("hosts.regbox.hostname", f"evil{ESC}]0;owned\x07", "control character"),
                 id="hostname-escape"),
    pytest.param(inv_case("hosts.regbox.user", f"admin{ESC}[2J", "control character"),
                 id="user-escape"),
    pytest.param(inv_case("hosts.regbox.user", "-oProxyCommand=sh", "is not a user name"),
                 id="user-option"),
    pytest.param(inv_case("hosts.regbox.key_file", "/etc/shadow", "/etc/shadow"),
                 id="key_file-/etc/shadow"),
    pytest.param(inv_case("hosts.regbox.key_file", "/dev/zero", "not a regular file"),
                 id="key_file-/dev/zero"),
    pytest.param(inv_case("known_hosts", "/dev/zero", "/dev/zero is not a regular file"),
                 id="known_hosts-/dev/zero"),
    pytest.param(inv_case("known_hosts", "/etc", "/etc is not a regular file"),
                 id="known_hosts-folder"),
    pytest.param(inv_case("pki.organization", "O" * 65, "65 characters; X.509 allows at most 64"),
                 id="organization-65"),
    pytest.param(inv_case("pki.organization", "O" * 40, "the CA's common name would be"),
                 id="organization-ca-common-name"),
    pytest.param(inv_case("registry.domain", "r" * 60 + ".example.com",
                          "the server certificate's common name"), id="domain-65"),
    pytest.param(inv_case("registry.domain", "registry.example.com\n", "control character"),
                 id="domain-newline"),
    pytest.param(inv_case("users.access", {"#alice": {"role": "pull"}}, "starts with '#'"),
                 id="access-#alice"),
    # 4, the inventory's half: names no certificate of the registry's should carry.
    *(pytest.param(inv_case("registry.extra_names", [name], why), id=f"extra_names-{name}")
      for name, why in [("*.com", "is a wildcard"), ("*.example.com", "is a wildcard"),
                        ("com", "public suffix"), ("co.uk", "public suffix"),
                        ("github.io", "public suffix")]),
    pytest.param(inv_case("registry.domain", "co.uk", "public suffix"), id="domain-co.uk"),
    pytest.param(inv_case("registry.domain", "github.io", "public suffix"), id="domain-github.io"),
]  # fmt: skip


def with_change(change: dict[str, Any]) -> dict[str, Any]:
    """The unit inventory with each dotted key of ``change`` set."""
    data = copy.deepcopy(base_inventory())
    for key, value in change.items():
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return data


def run(inv_path: Path, case: Hostile) -> subprocess.CompletedProcess[str]:
    argv = ["inventory.check"]
    if case.username:
        argv = ["users.add", "--username", case.username, "--password-stdin"]
    return subprocess.run(
        [*INVOKE, *argv], cwd=ROOT, env={**os.environ, inventory.ENV_VAR: str(inv_path)},
        input=case.stdin, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE)
def test_each_hostile_value_gets_a_one_line_refusal(
    write_inventory: Callable[..., Path], case: Hostile
) -> None:
    path = write_inventory(with_change(case.change))
    result = run(path, case)
    assert result.returncode == (1 if case.username else 2), result.stdout + result.stderr
    assert "Traceback" not in result.stderr and ESC not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    where = case.where if case.username else f"{path}: {case.where}: "
    assert lines[0].startswith(f"error: {where}"), lines[0]
    assert case.why in lines[0], lines[0]
    assert "root:" not in lines[0]  # nothing of /etc/shadow is shown
    assert not (path.parent / "state" / "htpasswd").exists()


@pytest.mark.parametrize(
    "name", ["alice", "ci-bot", "first.last", "user_1", "team-a-dev", "ci-team-a", "0day"]
)
def test_names_the_allow_list_keeps(name: str) -> None:
    assert users.check_username(name) == name


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("hosts.regbox.hostname", "registry.example.com"),
        ("hosts.regbox.hostname", "regbox"),
        ("hosts.regbox.hostname", "::1"),
        ("hosts.regbox.hostname", "fe80::1%eth0"),
        ("hosts.regbox.user", "admin"),
        ("hosts.regbox.user", "first.last"),
        ("hosts.regbox.key_file", "~/.ssh/regkit-missing-key"),  # not there yet: SSH says so
        ("known_hosts", "no-such-known-hosts"),
        ("registry.data_dir", "/srv/registry"),
        ("registry.data_dir", "/var/lib/regkit/registry/"),
        ("registry.extra_names", ["registry", "localhost", "registry.example.co.uk"]),
        ("pki.organization", "O" * (64 - len(" registry CA for registry.unit.test"))),
        ("state_dir", "state/regkit"),
    ],
)
def test_ordinary_values_still_pass(
    write_inventory: Callable[..., Path], key: str, value: Any
) -> None:
    inventory.load(write_inventory(with_change({key: value})))


def test_a_key_file_holding_a_private_key_passes(
    write_inventory: Callable[..., Path], tmp_path: Path
) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30
    )
    inv = inventory.load(write_inventory(with_change({"hosts.regbox.key_file": str(key)})))
    assert inv.hosts["regbox"].key_file == str(key)


def test_a_folder_regkit_did_not_make_keeps_its_mode_and_is_refused(
    write_inventory: Callable[..., Path], tmp_path: Path
) -> None:
    shared = tmp_path / "state"
    shared.mkdir()
    shared.chmod(0o755)
    path = write_inventory()
    result = run(path, user_case("alice", ""))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {shared}: other users may open this folder (mode 0755) and regkit keeps "
        f"secrets in it; it changes only folders it made: run chmod 700 {shared} if the "
        "folder is yours alone, or give another one"
    )
    assert shared.stat().st_mode & 0o777 == 0o755
    assert not (shared / "htpasswd").exists()
    shared.chmod(0o700)
    assert run(path, user_case("alice", "")).returncode == 0


def test_folders_regkit_makes_are_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        made = state.ensure_private_dir(tmp_path / "a" / "b")
    finally:
        os.umask(old)
    assert [p.stat().st_mode & 0o777 for p in (made.parent, made)] == [0o700, 0o700]
    assert state.ensure_private_dir(made) == made
    (tmp_path / "file").write_text("")
    with pytest.raises(StateError, match="not a folder"):
        state.ensure_private_dir(tmp_path / "file")


def test_a_user_an_older_regkit_let_in_can_be_removed(write_inventory: Callable[..., Path]) -> None:
    inv = inventory.load(write_inventory())
    users.set_password(inv, "alice", GOOD)
    htpasswd = users.load(inv)
    htpasswd.set_password("Zoë", GOOD)  # as regkit before #22 wrote it
    users.save(inv, htpasswd)
    assert users.check_removal(inv, "Zoë") == "Zoë"
    users.remove(inv, "Zoë")
    assert users.names(inv) == ["alice"]


def at_limits(domain: str, organization: str, alias: str) -> dict[str, Any]:
    """An inventory with a mirror, ``domain``, ``organization`` and one host ``alias``."""
    data = with_change(
        {"registry.domain": domain, "registry.mirror": {}, "pki.organization": organization}
    )
    data["hosts"] = {alias: {"hostname": "127.0.0.1", "role": "registry"}}
    return data


def test_the_certificates_build_at_the_inventorys_limits(
    write_inventory: Callable[..., Path],
) -> None:
    """The common-name bounds follow what tasks.certificates and tasks.mirror put there:
    at the limits each certificate builds (cryptography refuses a name over 64), one
    character more is refused in one line."""
    domain = "r" * (UB_COMMON_NAME - len("regkit mirror clients of .test")) + ".test"
    alias = "a" * (UB_COMMON_NAME - len("regkit mirror client "))
    organization = "O" * (UB_COMMON_NAME - len(" registry CA for ") - len(domain))
    inv = inventory.load(write_inventory(at_limits(domain, organization, alias)))
    certificates.build_ca(certificates.new_key("ec-p256"), organization, domain, 30)
    mirror.issue_client(inv, alias)
    for data, where in [
        (at_limits("r" + domain, "O", alias), "registry.domain: the mirror's client CA"),
        (at_limits(domain, organization + "O", alias), "pki.organization: the CA's common"),
        (at_limits(domain, organization, alias + "a"), f"hosts.{alias}a: its mirror client"),
    ]:
        with pytest.raises(InventoryError, match=r"X\.509 allows at most 64") as refused:
            inventory.load(write_inventory(data))
        assert where in str(refused.value)
