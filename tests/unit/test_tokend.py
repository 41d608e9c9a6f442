"""The token service's grants: what a token carries for each role and pattern (pure)."""

from __future__ import annotations

import json
from pathlib import Path

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
