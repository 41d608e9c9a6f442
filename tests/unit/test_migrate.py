"""migrate-storage's pure parts: where the tree goes, curl's config, what the other
registry hosts allow, and what differs after the move."""

from __future__ import annotations

import pytest

from tasks.errors import RemoteError
from tasks.inventory import Inventory
from tasks.inventory_storage import S3
from tasks.plans import migrate
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


def test_curls_config_holds_the_keys_quoted_and_the_private_ca() -> None:
    s3 = S3(endpoint="https://s3.example.com", bucket="registry", region="eu-west-1")
    keys = S3Keys("AKIA1234", 'the-"secret"\\x')
    assert migrate.curl_config(s3, keys) == (
        b'user = "AKIA1234:the-\\"secret\\"\\\\x"\naws-sigv4 = "aws:amz:eu-west-1:s3"\n'
    )
    private = S3(endpoint="https://10.0.0.5:7443", bucket="registry", ca_file="ca.pem")
    assert migrate.curl_config(private, keys).endswith(b'cacert = "/etc/regkit/s3-ca.crt"\n')


def test_the_scripts_read_the_keys_from_curls_config_and_remove_it(inv: Inventory) -> None:
    s3 = S3(endpoint="https://s3.example.com", bucket="registry")
    for mode in ("copy", "check"):
        script = migrate.copy_script(inv, s3, mode)
        assert "-K /run/regkit-migrate.curl" in script
        assert "trap 'rm -rf \"$work\" /run/regkit-migrate.curl' EXIT" in script
    assert migrate.remove_config() == "rm -f /run/regkit-migrate.curl"
    assert migrate.delete_tree(inv) == "rm -rf /var/lib/regkit/registry/docker"


def test_the_registry_restarts_read_only_as_it_runs_on_its_disk(inv: Inventory) -> None:
    data = inv.model_dump()
    data["registry"]["storage"] = {
        "driver": "s3",
        "s3": {"endpoint": "http://x:1", "bucket": "bk1"},
    }
    on_s3 = Inventory.model_validate({**data, "source": inv.source})
    disk = migrate.on_disk(on_s3)
    assert disk.registry.storage.s3 is None and on_s3.registry.storage.s3 is not None
    assert disk.source == on_s3.source and disk.hosts == on_s3.hosts


@pytest.mark.parametrize(
    ("others", "says"),
    [
        ({"regbox2": {"driver": "s3"}}, r"regbox2 already serves bucket registry"),
        (
            {"regbox2": {"driver": "filesystem", "files": "12"}},
            r"regbox2 also keeps images on its disk \(12 files\)",
        ),
    ],
)
def test_a_move_that_could_lose_images_is_refused(
    others: dict[str, dict[str, str]], says: str
) -> None:
    with pytest.raises(RemoteError, match=says):
        migrate.others_allow("regbox", others, "registry")


def test_an_empty_second_host_allows_the_move() -> None:
    assert migrate.others_allow("regbox", {"regbox2": {"driver": "filesystem"}}, "b") is None


def test_a_tag_missing_or_moved_after_the_move_is_named() -> None:
    before = {"team/app:1": "sha256:" + "a" * 64, "team/app:2": "sha256:" + "b" * 64}
    assert migrate.differences(before, dict(before)) == []
    after = {"team/app:1": "sha256:" + "c" * 64}
    assert migrate.differences(before, after) == [
        f"team/app:1 (sha256:{'c' * 12}, was sha256:{'a' * 12})",
        f"team/app:2 (missing, was sha256:{'b' * 12})",
    ]
