"""The catalog's table: what `fab catalog` prints from the registry's answers."""

from __future__ import annotations

import io
import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from paramiko.ssh_exception import ChannelException

from tasks import catalog
from tasks.report import Report


def test_catalog_table() -> None:
    tags = [
        catalog.Tag(
            "team/app",
            "1.0",
            "sha256:" + "a" * 64,
            5 * 1024 * 1024,
            ["linux/amd64"],
            "2026-11-28T03:00:00.123Z",
        ),
        catalog.Tag(
            "team/multi",
            "2",
            "sha256:" + "b" * 64,
            1234,
            ["linux/amd64", "linux/arm64"],
            index=True,
        ),
        catalog.Tag("team/notes", "v1", "sha256:" + "c" * 64, 99, artifact="application/x.n+json"),
    ]
    lines = catalog.table(tags, "registry.unit.test").splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "DIGEST", "SIZE", "PLATFORM", "CREATED"]
    assert lines[1].split() == [
        "team/app",
        "1.0",
        "sha256:aaaaaaaaaaaa",
        "5.0",
        "MiB",
        "linux/amd64",
        "2026-11-28",
        "03:00:00",
    ]
    assert "index: linux/amd64, linux/arm64" in lines[2]
    assert lines[3].split()[-3:] == ["artifact:", "application/x.n+json", "-"]
    assert catalog.table([], "registry.unit.test") == (
        "no repositories yet; push one: docker push registry.unit.test/<name>:<tag>"
    )


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            ChannelException(2, "Connect failed"),
            "regbox: nothing answers on port 443 on the host; "
            "is regkit-nginx running? see 'fab status'",
        ),
        (
            ChannelException(1, "Administratively prohibited"),
            "regbox: the host's sshd refuses port forwarding, which catalog and prune need; "
            "set 'AllowTcpForwarding local' (or yes) for this user in sshd_config",
        ),
        (EOFError("eof"), "regbox: the SSH tunnel to port 443 failed: eof"),
    ],
)
def test_a_failed_tunnel_says_why(error: BaseException, message: str) -> None:
    assert catalog.tunnel_failure("regbox", 443, [error]) == message


# What a terminal would obey: C0 and C1 controls, DEL, bidi overrides (a newline ends a row).
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
CONFIG = "sha256:" + "c" * 64
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
IMAGE = "application/vnd.docker.container.image.v1+json"


class FakeRegistry(catalog.RegistryApi):
    """The registry's answers by path (the query left out): (status, JSON, or raw bytes)."""

    def __init__(self, answers: dict[str, tuple[int, object]]) -> None:
        self._service, self._login, self._tokens = "registry.unit.test", "Basic x", {}
        self._wanted: list[str] = []
        self.answers = answers
        self.token_requests: list[list[str]] = []  # the scopes each one asked for

    def call(
        self,
        method: str,
        path: str,
        authorization: str,
        accept: str = "application/json",
        limit: int = 0,
    ) -> tuple[int, bytes, dict[str, str]]:
        if path.startswith("/auth/token"):
            self.token_requests.append(parse_qs(urlsplit(path).query)["scope"])
            return 200, b'{"token": "t", "expires_in": 300}', {}
        status, answer = self.answers.get(path.split("?")[0], (404, b""))
        body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        headers = {"docker-content-digest": "sha256:" + "d" * 64} if "/manifests/" in path else {}
        return status, body[: limit + 1] if limit else body, headers


def image(config: object, repo: str = "team/app", tags: tuple[str, ...] = ("1",)) -> dict:
    """The answers for ``repo`` with ``tags``, all of one image whose config is ``config``
    (a JSON value, or raw bytes)."""
    blob = config if isinstance(config, bytes) else json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": IMAGE, "size": len(blob), "digest": CONFIG},
        "layers": [{"mediaType": "x", "size": 1024, "digest": "sha256:" + "e" * 64}],
    }
    return {
        "/v2/_catalog": (200, {"repositories": [repo]}),
        f"/v2/{repo}/tags/list": (200, {"name": repo, "tags": list(tags)}),
        **{f"/v2/{repo}/manifests/{tag}": (200, manifest) for tag in tags},
        f"/v2/{repo}/blobs/{CONFIG}": (200, blob),
    }


def shown(answers: dict[str, tuple[int, object]]) -> list[str]:
    """The table's rows, as `fab catalog` prints them from ``answers``."""
    return catalog.table(catalog.read_catalog(FakeRegistry(answers)), "r.unit.test").splitlines()


def test_escape_sequences_in_a_config_are_shown_not_obeyed() -> None:
    """A pusher's config sets the terminal's title, and rewrites its line as a fake row."""
    config = {
        "os": "linux",
        "architecture": "amd64\x1b]0;pwned\x07",
        "created": "\x1b[31m2026\r\x1b[2Kteam/fake",
    }
    lines = shown(image(config))
    assert len(lines) == 2 and not RAW.search("\n".join(lines))
    assert r"linux/amd64\x1b]0;pwned\x07" in lines[1]
    assert lines[1].endswith(r"\x1b[31m2026\r\x1b[2Kteam/")  # its first 19 characters


@pytest.mark.parametrize(
    ("config", "platform", "created"),
    [
        ({"os": "linux", "architecture": "amd64", "created": 12345}, "linux/amd64", "-"),
        ({"os": "linux", "architecture": ["amd64"], "created": None}, "-", "-"),
        ({"os": 7, "architecture": "arm64", "created": {"at": 1}}, "arm64", "-"),
        ([{"architecture": "amd64"}], "-", "-"),  # a config that is not an object
        (b"\x00\xff not JSON", "-", "-"),
        (b"[" * 100_000, "-", "-"),  # deeper than json's recursion
        (b'{"os": "linux", "architecture": "amd64"' + b" " * 5 * 2**20 + b"}", "-", "-"),
    ],
)
def test_config_fields_of_the_wrong_type_read_as_absent(
    config: object, platform: str, created: str
) -> None:
    lines = shown(image(config))
    assert len(lines) == 2
    assert lines[1].split()[-2:] == [platform, created]


def test_a_long_architecture_is_cut_not_padded_onto_every_row() -> None:
    answers = image({"os": "linux", "architecture": "\x1b" * 2**16})
    answers |= image({"os": "linux", "architecture": "amd64"}, repo="team/b")
    answers["/v2/_catalog"] = (200, {"repositories": ["team/app", "team/b"]})
    lines = shown(answers)
    assert max(len(line) for line in lines) < 400
    assert "linux/\\x1b\\x1b" in lines[1] and lines[1].endswith("…  -")


def test_manifest_fields_of_the_wrong_type_read_as_absent() -> None:
    answers = image({"os": "linux", "architecture": "amd64"})
    manifest = answers["/v2/team/app/manifests/1"][1]
    manifest.update(artifactType=7, layers=[{"size": "1024"}, "x", {"size": True}])  # type: ignore[union-attr]
    tags = catalog.read_catalog(FakeRegistry(answers))
    assert (tags[0].artifact, tags[0].platforms) == ("", ["linux/amd64"])
    assert tags[0].size == len(json.dumps({"os": "linux", "architecture": "amd64"}))
    answers["/v2/team/app/manifests/1"] = (200, {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"digest": "sha256:" + "a" * 64, "size": 10,
             "platform": {"os": "linux", "architecture": "\x1b[2J"}},
            {"digest": 5, "size": "10", "platform": "linux/arm64"},
            "junk",
        ],
    })  # fmt: skip
    index = catalog.read_catalog(FakeRegistry(answers))[0]
    assert (index.index, index.size, index.manifests) == (True, 10, ["sha256:" + "a" * 64])
    assert index.platforms == ["linux/\x1b[2J"]
    assert r"index: linux/\x1b[2J" in catalog.table([index], "r.unit.test")


def skips(answers: dict[str, tuple[int, object]]) -> tuple[list[str], list[tuple[str, str]]]:
    """(repository:tag of each tag read, (what, why) of each skipped)."""
    skipped: list[tuple[str, str]] = []
    tags = catalog.read_catalog(FakeRegistry(answers), lambda *s: skipped.append(s))
    return [f"{t.repository}:{t.tag}" for t in tags], skipped


def test_a_repository_without_tags_is_skipped_and_said() -> None:
    """Blobs only (an upload that never got a manifest: tags/list answers 404), or every
    tag deleted: the other repositories are listed."""
    answers = image({"architecture": "amd64"})
    answers["/v2/_catalog"] = (200, {"repositories": ["bench/blob", "team/app", "team/gone"]})
    answers["/v2/bench/blob/tags/list"] = (404, {"errors": [{"code": "NAME_UNKNOWN"}]})
    answers["/v2/team/gone/tags/list"] = (200, {"name": "team/gone", "tags": None})
    assert skips(answers) == (
        ["team/app:1"],
        [
            ("bench/blob", "no tags: the registry answered 404 to tags/list"),
            ("team/gone", "no tags: its tag list is empty"),
        ],
    )


def test_a_tag_gone_while_read_is_skipped_and_said() -> None:
    answers = image({"architecture": "amd64"}, tags=("1", "2"))
    del answers["/v2/team/app/manifests/2"]
    assert skips(answers) == (
        ["team/app:1"],
        [("team/app:2", "gone: GET /v2/team/app/manifests/2: 404")],
    )
    del answers[f"/v2/team/app/blobs/{CONFIG}"]
    assert skips(answers)[1][0] == ("team/app:1", f"gone: GET /v2/team/app/blobs/{CONFIG}: 404")


def test_other_errors_still_fail_the_host() -> None:
    answers = image({"architecture": "amd64"})
    answers["/v2/team/app/tags/list"] = (500, b"")
    with pytest.raises(catalog.ApiError, match="tags/list: 500"):
        skips(answers)


def test_a_skipped_repository_is_one_line_saying_which_and_why() -> None:
    stream = io.StringIO()
    skip = catalog.skipper(Report(stream=stream), "regbox")
    skip("bench/blob", "no tags: the registry answered 404 to tags/list")
    skip("team/x\x1b[2K", "gone: \u202e")
    assert stream.getvalue().splitlines() == [
        "[regbox] catalog of bench/blob: skipped (no tags: the registry answered 404 to tags/list)",
        r"[regbox] catalog of team/x\x1b[2K: skipped (gone: \u202e)",
    ]


def test_many_repositories_cost_few_password_checks() -> None:
    """nginx allows a client a burst of 20 logins, then one a second: a token asked for
    covers up to 40 of the repositories about to be read."""
    answers: dict[str, tuple[int, object]] = {}
    repos = [f"team/app{i}" for i in range(100)]
    for repo in repos:
        answers |= image({"os": "linux", "architecture": "amd64"}, repo)
    answers["/v2/_catalog"] = (200, {"repositories": repos})
    api = FakeRegistry(answers)
    assert len(catalog.read_catalog(api)) == 100
    assert [len(scopes) for scopes in api.token_requests] == [1, 40, 40, 20]
    asked = [scope for scopes in api.token_requests[1:] for scope in scopes]
    assert sorted(asked) == sorted(catalog.pull_scope(repo) for repo in repos)
