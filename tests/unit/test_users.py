"""The password file: bcrypt entries, username and password rules, atomic writes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import accounts, cli, inventory, users
from tasks.errors import RegkitError, UsersError
from tasks.inventory import Inventory

ROOT = Path(__file__).resolve().parents[2]
GOOD = "correct horse battery"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("a:b", "contains ':'"),
        ("a b", "whitespace or a control character"),
        ("tab\there", "whitespace or a control character"),
        ("bell\x07", "whitespace or a control character"),
        ("x" * 65, "longer than 64"),
        ("Zoë", "is not allowed; use lowercase letters a-z"),
        ("#alice", "starts with '#'"),
        ("-alice", "starting with a letter or digit"),
    ],
)
def test_bad_usernames_are_refused(name: str, why: str) -> None:
    with pytest.raises(UsersError, match=why):
        users.check_username(name)


@pytest.mark.parametrize("name", ["alice", "ci-bot", "first.last", "user_1", "0day"])
def test_good_usernames_pass(name: str) -> None:
    assert users.check_username(name) == name


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("", "empty"),
        ("tiny-pw", r"too short \(7 characters\); use at least 12"),
        ("é" * 40, "longer than 72 bytes"),
        ("twelve chars\x00!", "control character"),
    ],
)
def test_bad_passwords_are_refused_without_echo(password: str, why: str) -> None:
    with pytest.raises(UsersError, match=why) as err:
        users.check_password(password, 12)
    if password:
        assert password not in str(err.value)


def test_add_writes_bcrypt_2y_at_0600(inv: Inventory) -> None:
    assert users.set_password(inv, "alice", GOOD) == "added"
    path = users.password_file(inv)
    assert path.stat().st_mode & 0o777 == 0o600
    line = path.read_text().strip()
    assert line.startswith("alice:$2y$10$")
    assert GOOD not in path.read_text()
    assert users.load(inv).check_password("alice", GOOD)


def test_changing_a_password_says_updated(inv: Inventory) -> None:
    users.set_password(inv, "alice", GOOD)
    assert users.set_password(inv, "alice", GOOD + "!") == "updated"
    htpasswd = users.load(inv)
    assert htpasswd.users() == ["alice"]
    assert htpasswd.check_password("alice", GOOD + "!")
    assert not htpasswd.check_password("alice", GOOD)


def test_refused_change_leaves_the_file_untouched(inv: Inventory) -> None:
    users.set_password(inv, "alice", GOOD)
    before = users.password_file(inv).read_bytes()
    with pytest.raises(UsersError):
        users.set_password(inv, "bob", "short")
    with pytest.raises(UsersError):
        users.set_password(inv, "b:ob", GOOD)
    assert users.password_file(inv).read_bytes() == before


def test_remove_and_last_user_is_kept(inv: Inventory) -> None:
    users.set_password(inv, "alice", GOOD)
    users.set_password(inv, "bob", GOOD)
    users.remove(inv, "alice")
    assert users.load(inv).users() == ["bob"]
    with pytest.raises(UsersError, match="'bob' is the last user"):
        users.remove(inv, "bob")
    with pytest.raises(UsersError, match=r"no user 'carol' .* \(users: bob\)"):
        users.remove(inv, "carol")


def test_nginx_style_htpasswd_tool_accepts_the_hash(inv: Inventory) -> None:
    users.set_password(inv, "alice", GOOD)
    result = subprocess.run(
        ["htpasswd", "-v", "-i", str(users.password_file(inv)), "alice"],
        input=GOOD,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "correct" in result.stderr


def run_add(inv_path: Path, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, inventory.ENV_VAR: str(inv_path)}
    return subprocess.run(
        [sys.executable, "-m", "invoke", "users.add", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_reads_password_from_stdin_and_never_prints_it(inv: Inventory) -> None:
    result = run_add(inv.source, GOOD + "\n", "--username", "alice", "--password-stdin")
    assert result.returncode == 0, result.stderr
    assert "[local] user alice: changed (added, bcrypt)" in result.stdout
    assert GOOD not in result.stdout + result.stderr
    again = run_add(inv.source, GOOD + "\n", "--username", "alice", "--password-stdin")
    assert "changed (updated, bcrypt)" in again.stdout


def test_cli_bad_input_is_one_line_without_traceback(inv: Inventory) -> None:
    result = run_add(inv.source, "short\n", "--username", "alice", "--password-stdin")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: the password is too short (5 characters); use at least 12"
    )
    assert not users.password_file(inv).exists()


def test_cli_has_no_password_argument() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "--help", "users.add"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "--password-stdin" in result.stdout
    assert "--password " not in result.stdout
    assert "--password=" not in result.stdout


@pytest.mark.parametrize(
    ("password", "line"),
    [
        ("plain-password", 'user = "bob:plain-password"\n'),
        ('with"quote', 'user = "bob:with\\"quote"\n'),
        ("back\\slash", 'user = "bob:back\\\\slash"\n'),
    ],
)
def test_curl_config_escapes_the_password(password: str, line: str) -> None:
    assert accounts.curl_config("bob", password) == line


def test_deployed_file_is_every_user_plus_the_probe(inv: Inventory) -> None:
    users.set_password(inv, "alice", "alice-password-1")
    users.set_password(inv, "bob", "bob-password-12")
    users.ensure_probe_credential(inv)
    deployed = users.deployed_htpasswd(inv).decode()
    assert deployed.startswith(users.password_file(inv).read_text())
    names = [line.split(":", 1)[0] for line in deployed.splitlines()]
    assert names == ["alice", "bob", users.PROBE_USER]


def test_deployed_file_refuses_no_users_and_malformed_lines(inv: Inventory) -> None:
    with pytest.raises(UsersError, match=r"no users yet; add one first with 'invoke users\.add'"):
        users.deployed_htpasswd(inv)
    users.password_file(inv).parent.mkdir(parents=True, exist_ok=True)
    users.password_file(inv).write_text("alice:$2y$12$abc\njust-a-name\n")
    with pytest.raises(UsersError, match=r"malformed password file \(line 2 is not user:hash\)"):
        users.deployed_htpasswd(inv)


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "invoke", "users.remove", "--help"],
        [sys.executable, "-m", "invoke", "users.remove", "-h"],
        [str(Path(sys.executable).parent / "fab"), "deluser", "--help"],
    ],
)
def test_help_after_a_task_with_a_positional_argument_is_its_help(
    inv: Inventory, argv: list[str]
) -> None:
    users.set_password(inv, "alice", GOOD)
    users.set_password(inv, "bob", GOOD)
    before = users.password_file(inv).read_bytes()
    env = {**os.environ, inventory.ENV_VAR: str(inv.source)}
    result = subprocess.run(
        argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("Usage: ") and "--username" in result.stdout
    assert "Remove" in result.stdout and "?" not in result.stdout
    assert users.password_file(inv).read_bytes() == before


@pytest.mark.parametrize(
    ("stdin", "read"),
    [
        ("secret-1\n", "secret-1"),
        ("secret-1", "secret-1"),
        ("secret-1\r\n", "secret-1"),
        ("secret-1\nsecond\n", None),
        ("secret-1\n\n", None),
        ("", None),
        ("x" * 1025, None),
    ],
)
def test_a_secret_on_stdin_is_one_line_for_every_task(
    monkeypatch: pytest.MonkeyPatch, stdin: str, read: str | None
) -> None:
    """users.add and trust-ca --login read --password-stdin alike: more than one line
    is refused, never cut at the first."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    if read is None:
        with pytest.raises(RegkitError, match="--password-stdin"):
            cli.read_secret_stdin("password")
    else:
        assert cli.read_secret_stdin("password") == read


def test_the_user_table_prints_a_hand_edited_name_as_escapes(inv: Inventory) -> None:
    users.set_password(inv, "alice", "correct horse battery")
    path = users.password_file(inv)
    path.write_text(path.read_text() + "\x1b]0;pwned\x07:$2y$10$" + "a" * 53 + "\n")
    table = accounts.user_table(inv)
    assert "\x1b" not in table and "\\x1b]0;pwned\\x07" in table


def test_a_password_file_entry_that_is_not_bcrypt_is_refused_before_a_deploy(
    inv: Inventory,
) -> None:
    """nginx took apr1 and SHA entries; the token service checks bcrypt only."""
    users.set_password(inv, "alice", "correct horse battery")
    users.ensure_probe_credential(inv)
    path = users.password_file(inv)
    path.write_text(path.read_text() + "legacy:$apr1$abc$0123456789abcdefghijkl\n")
    with pytest.raises(UsersError, match=r"line 2 \('legacy'\) is not a bcrypt hash"):
        users.deployed_htpasswd(inv)
