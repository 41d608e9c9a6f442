"""The catalog's table: what `fab catalog` prints from the registry's answers."""

from __future__ import annotations

import pytest
from paramiko.ssh_exception import ChannelException

from tasks import catalog


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
