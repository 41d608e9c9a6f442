"""migrate-storage's pure parts: where the tree goes, curl's config, what differs after."""

from __future__ import annotations

import pytest

from tasks import migrate
from tasks.inventory import Inventory
from tasks.inventory_storage import S3
from tasks.storage import S3Keys


@pytest.mark.parametrize(
    ("root", "url"),
    [
        ("/", "http://10.0.0.5:7480/registry/docker/registry/v2"),
        ("/team/", "http://10.0.0.5:7480/registry/team/docker/registry/v2"),
        ("/a/b", "http://10.0.0.5:7480/registry/a/b/docker/registry/v2"),
    ],
)
def test_the_tree_goes_under_the_root_directory(root: str, url: str) -> None:
    s3 = S3(endpoint="http://10.0.0.5:7480", bucket="registry", root_directory=root)
    assert migrate.bucket_url(s3) == url


def test_the_keys_reach_curl_in_its_config_only(inv: Inventory) -> None:
    s3 = S3(endpoint="https://s3.example.com", bucket="registry", region="eu-west-1")
    keys = S3Keys("AKIA1234", "the-secret")
    assert migrate.curl_config(s3, keys) == (
        b'user = "AKIA1234:the-secret"\naws-sigv4 = "aws:amz:eu-west-1:s3"\n'
    )
    private = S3(endpoint="https://10.0.0.5:7443", bucket="registry", ca_file="ca.pem")
    assert migrate.curl_config(private, keys).endswith(b'cacert = "/etc/regkit/s3-ca.crt"\n')
    for mode in ("copy", "check"):
        script = migrate.copy_script(inv, s3, mode)
        assert "the-secret" not in script and "-K /run/regkit-migrate.curl" in script


def test_a_tag_missing_or_moved_after_the_move_is_named() -> None:
    before = {"team/app:1": "sha256:" + "a" * 64, "team/app:2": "sha256:" + "b" * 64}
    assert migrate.differences(before, dict(before)) == []
    after = {"team/app:1": "sha256:" + "c" * 64}
    assert migrate.differences(before, after) == [
        f"team/app:1 (sha256:{'c' * 12}, was sha256:{'a' * 12})",
        f"team/app:2 (missing, was sha256:{'b' * 12})",
    ]
