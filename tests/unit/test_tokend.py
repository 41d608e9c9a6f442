"""The token service: what a token carries for each role and pattern, and how logins are
checked (the password file, the stand-in for unknown names, turns by client)."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

import bcrypt
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tasks import certificates, layout, signing
from tokend import service

PUSH_TEAM_A = {"role": "push", "repos": ["team-a/*"]}


@pytest.mark.parametrize(
    ("scope", "parsed"),
    [
        ("repository:team-a/app:pull,push", ("repository", "team-a/app", ("pull", "push"))),
        ("repository:host:5000/app:pull", ("repository", "host:5000/app", ("pull",))),
        ("registry:catalog:*", ("registry", "catalog", ("*",))),
        ("repository:app:", ("repository", "app", ())),
        ("nonsense", None),
        ("repository::pull", None),
    ],
)
def test_parse_scope(scope: str, parsed: tuple | None) -> None:
    assert service.parse_scope(scope) == parsed


@pytest.mark.parametrize(
    ("rights", "scope", "actions"),
    [
        ({"role": "pull", "repos": ["*"]}, "repository:any/app:pull,push", ["pull"]),
        ({"role": "pull", "repos": ["*"]}, "repository:any/app:delete", []),
        ({"role": "push", "repos": ["*"]}, "repository:any/app:pull,push", ["pull", "push"]),
        ({"role": "push", "repos": ["*"]}, "repository:any/app:delete", []),
        ({"role": "admin", "repos": ["*"]}, "repository:any/app:delete", ["delete"]),
        ({"role": "admin", "repos": ["*"]}, "repository:any/app:*", ["*"]),
        (PUSH_TEAM_A, "repository:team-a/app:pull,push", ["pull", "push"]),
        (PUSH_TEAM_A, "repository:team-a/deep/app:push", ["push"]),
        (PUSH_TEAM_A, "repository:team-b/app:pull,push", []),
        (PUSH_TEAM_A, "repository:team-a:pull", []),
        (PUSH_TEAM_A, "repository:team-ab/app:pull", []),
        ({"role": "push", "repos": ["shared/base"]}, "repository:shared/base:pull", ["pull"]),
        ({"role": "push", "repos": ["shared/base"]}, "repository:shared/base2:pull", []),
        ({"role": "nobody", "repos": ["*"]}, "repository:any/app:pull", []),
        (None, "repository:any/app:pull", []),
    ],
)
def test_a_grant_is_what_was_asked_cut_to_the_rights(
    rights: dict | None, scope: str, actions: list[str]
) -> None:
    granted = service.grant(rights, [scope])
    assert [a for entry in granted for a in entry["actions"]] == actions


@pytest.mark.parametrize(
    ("rights", "listed"),
    [
        ({"role": "admin", "repos": ["team-a/*"]}, True),
        ({"role": "pull", "repos": ["*"]}, True),
        ({"role": "push", "repos": ["team-a/*", "shared/*"]}, False),
    ],
)
def test_the_catalog_is_for_admins_and_users_of_everything(rights: dict, listed: bool) -> None:
    granted = service.grant(rights, ["registry:catalog:*"])
    assert granted == (
        [{"type": "registry", "name": "catalog", "actions": ["*"]}] if listed else []
    )


def test_scopes_may_repeat_and_be_space_separated() -> None:
    query = {"scope": ["repository:a:pull repository:b:pull", "registry:catalog:*"]}
    assert service.scopes_of(query) == [
        "repository:a:pull",
        "repository:b:pull",
        "registry:catalog:*",
    ]


def test_rights_are_read_again_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "rights.json"
    path.write_text(json.dumps({"users": {"alice": {"role": "pull", "repos": ["*"]}}}))
    rights = service.Rights(str(path))
    assert rights.of("alice") == {"role": "pull", "repos": ["*"]}
    replacement = tmp_path / "new.json"
    replacement.write_text(json.dumps({"users": {"alice": {"role": "admin", "repos": ["*"]}}}))
    replacement.replace(path)  # as an upload replaces it: a new inode
    assert rights.of("alice") == {"role": "admin", "repos": ["*"]}
    path.unlink()
    assert rights.of("alice") is None


def test_a_new_signing_key_is_used_from_the_next_token(tmp_path: Path) -> None:
    def write_pair() -> ec.EllipticCurvePrivateKey:
        key = ec.generate_private_key(ec.SECP256R1())
        (tmp_path / "token.key").write_bytes(certificates.key_pem(key))
        (tmp_path / "token.crt").write_bytes(
            certificates.cert_pem(signing.build_cert(key, "registry.unit.test"))
        )
        return key

    def sign() -> str:
        return keys.signer().sign("alice", [])

    first = write_pair()
    keys = service.KeyFiles(
        str(tmp_path / "token.key"), str(tmp_path / "token.crt"), "iss", "registry.unit.test"
    )
    jwt.decode(sign(), first.public_key(), algorithms=["ES256"], audience="registry.unit.test")
    second = write_pair()
    token = sign()
    jwt.decode(token, second.public_key(), algorithms=["ES256"], audience="registry.unit.test")
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, first.public_key(), algorithms=["ES256"], audience="registry.unit.test")


def test_the_page_leaves_out_the_probe_regkit_deploys() -> None:
    assert service.PROBE_REPO == layout.PROBE_REPO


def htpasswd_line(name: str, password: str, cost: int) -> bytes:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).replace(b"$2b$", b"$2y$")
    return name.encode() + b":" + hashed + b"\n"


@pytest.fixture
def passwords(tmp_path: Path) -> service.Passwords:
    path = tmp_path / "htpasswd"
    lines = [
        htpasswd_line("alice", "alice-password-1", 5),
        htpasswd_line("bob", "bob-password-22", 5),
        htpasswd_line("regkit-probe", "probe", 4),
        b"# a comment\n",
        b"legacy:$apr1$abc$0123456789abcdefghijkl\n",
    ]
    path.write_bytes(b"".join(lines))
    return service.Passwords(str(path), slots=1)


def test_a_login_is_checked_against_the_password_file(
    passwords: service.Passwords, tmp_path: Path
) -> None:
    assert passwords.check("alice", "alice-password-1") is True
    assert passwords.check("alice", "bob-password-22") is False
    assert passwords.check("mallory", "alice-password-1") is False
    assert passwords.check("legacy", "anything") is False  # not bcrypt: never valid
    assert passwords.check("alice", "alice-password-1\x00") is False
    # A new file (an upload replaces it) is read at the next check.
    replacement = tmp_path / "new"
    replacement.write_bytes(htpasswd_line("carol", "carol-password-3", 4))
    replacement.replace(tmp_path / "htpasswd")
    assert passwords.check("carol", "carol-password-3") is True
    assert passwords.check("alice", "alice-password-1") is False


def test_every_failed_login_costs_one_check_at_the_highest_cost(
    passwords: service.Passwords, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No oracle for user names: a name that is not there (or has no bcrypt entry) is
    checked against a stand-in hash of the file's highest cost, and a wrong password
    for a cheaper entry (the probe at cost 4, as robots are) is checked against it too;
    a right one is not."""
    checked: list[list[int]] = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        checked[-1].append(service.bcrypt_cost(hashed) or 0)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", spy)
    for name in ("alice", "mallory", "legacy", "", "regkit-probe"):
        checked.append([])
        assert passwords.check(name, "wrong password") is False
    assert checked == [[5], [5], [5], [5], [4, 5]]
    checked.append([])
    assert passwords.check("regkit-probe", "probe") is True
    assert checked[-1] == [4]


@pytest.mark.parametrize(
    ("costs", "highest"),
    [([5, 5, 4], 5), ([12, 5, 5, 5], 12), ([14, 12], 14), ([], 12), ([31, 12], 16), ([3], 4)],
)
def test_the_stand_in_costs_the_highest_cost_in_the_file(costs: list[int], highest: int) -> None:
    hashes = [f"$2y${c:02d}${'a' * 53}".encode() for c in costs] + [b"$apr1$x$y"]
    assert service.highest_cost(hashes) == highest
    made = service.stand_in(highest)
    assert service.bcrypt_cost(made) == highest and len(made) == 60


def test_no_password_matches_the_stand_in() -> None:
    made = service.stand_in(4)
    assert not any(bcrypt.checkpw(p, made) for p in (b"", b"A", b"A" * 31, made))


@pytest.mark.parametrize(
    ("header", "credentials"),
    [
        (
            "Basic " + base64.b64encode(b"alice:pw:with:colons").decode(),
            ("alice", "pw:with:colons"),
        ),
        ("basic " + base64.b64encode("zoë:pässword".encode()).decode(), ("zoë", "pässword")),
        ("Basic " + base64.b64encode(b"alice").decode(), None),
        ("Basic " + base64.b64encode(b":pw").decode(), None),
        ("Basic not-base64!", None),
        ("Basic " + base64.b64encode(b"\xff:pw").decode(), None),
        ("Bearer abc.def.ghi", None),
        ("", None),
    ],
)
def test_basic_credentials(header: str, credentials: tuple[str, str] | None) -> None:
    assert service.basic_credentials(header) == credentials


def test_checks_take_turns_by_client() -> None:
    """One slot; a flooder queues five checks, then another client one: the other
    client is served right after the check that holds the slot, not after the flood."""
    slots = service.FairSlots(1)
    assert slots.acquire("flooder", 1)
    order: list[str] = []
    lock = threading.Lock()

    def wait(client: str) -> None:
        assert slots.acquire(client, 10)
        with lock:
            order.append(client)
        slots.release()

    threads = [threading.Thread(target=wait, args=("flooder",)) for _ in range(5)]
    for thread in threads:
        thread.start()
    while len(slots._waiting.get("flooder", ())) < 5:
        time.sleep(0.01)
    other = threading.Thread(target=wait, args=("other",))
    other.start()
    while "other" not in slots._waiting:
        time.sleep(0.01)
    slots.release()
    for thread in [*threads, other]:
        thread.join(10)
    assert order[:2] == ["flooder", "other"]
    assert sorted(order) == ["flooder"] * 5 + ["other"]


def test_a_check_that_waits_too_long_gives_up() -> None:
    slots = service.FairSlots(1)
    assert slots.acquire("a", 1)
    assert slots.acquire("b", 0.05) is False
    slots.release()
    assert slots.acquire("b", 1)
