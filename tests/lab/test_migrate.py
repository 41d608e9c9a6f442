"""``fab migrate-storage --to s3``: regbox's images move from its disk into the lab's
bucket; regbox and regbox2 then serve every tag with the digest it had. A corrupt
blob is named and nothing switches; the disk's copy goes only with --delete-source.

The module ends with regbox2 undeployed and regbox on its disk again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lab.store import S3_STATE
from tests.lab.conftest import (
    Lab,
    Pushed,
    bucket_request,
    fab,
    login,
    must,
    pinned,
    pull_digest,
    push_image,
    s3_variant,
    sh,
    trust_by_certs_d,
)

ROOT = f"/regkit-migrated-{uuid.uuid4().hex[:8]}"
HOSTS = ("regbox", "regbox2")


@dataclass
class Moving:
    """The lab inventory (disk) and its S3 variant, and five images pushed to the disk."""

    disk: Lab
    s3: Lab
    images: list[Pushed]


@pytest.fixture(scope="module")
def moving(registry: Lab, store: Lab) -> Iterator[Moving]:
    # Over https, with the lab's private CA: the copy's curl and the registry trust it.
    s3 = s3_variant(store, "migrate", ROOT, https=True)
    clients = [s3.connect(alias) for alias in ("client1", "client2")]
    for client in clients:
        trust_by_certs_d(s3, client)
        login(client)
    with pinned(clients[0], "regbox"):
        images = [push_image(clients[0], repo=f"team/moved{n}") for n in range(5)]
    yield Moving(registry, s3, images)
    must(fab(s3, "-H", "regbox2", "undeploy"))
    must(fab(registry, "-H", "regbox", "deploy"))
    s3.inventory_path.unlink()


def test_a_corrupt_blob_is_named_and_nothing_switches(moving: Moving) -> None:
    regbox = moving.disk.connect("regbox")
    blobs = f"{moving.disk.inventory.registry.data_dir}/docker/registry/v2/blobs"
    # A layer of one of the 1 MiB images on regbox's disk.
    blob = sh(regbox, f"find {blobs} -name data -size +1000k | head -1")
    digest = "sha256:" + blob.split("/")[-2]
    sh(regbox, f"cp -p {blob} /tmp/good-blob && printf x | dd of={blob} conv=notrunc 2>/dev/null")
    try:
        out = fab(moving.s3, "-H", "regbox", "migrate-storage", "--to", "s3")
    finally:
        sh(regbox, f"cat /tmp/good-blob > {blob} && rm /tmp/good-blob")
    assert out.returncode == 1, out.stdout + out.stderr
    failed = next(line for line in out.stdout.splitlines() if "migrate-storage: failed" in line)
    assert digest in failed and "nothing was switched" in failed, out.stdout
    assert "Traceback" not in out.stderr
    label = "docker inspect --format '{{index .Config.Labels \"regkit.config\"}}' regkit-registry"
    staged = f"/etc/regkit/registry/$({label})/config.yml"
    assert sh(regbox, f"grep -c '^  filesystem:' {staged}; grep -c '^  s3:' {staged} || true") == (
        "1\n0"
    )
    with pinned(moving.s3.connect("client1"), "regbox"):
        push_image(moving.s3.connect("client1"), repo="team/still-writable")


def test_every_tag_keeps_its_digest_on_both_replicas(moving: Moving) -> None:
    run = fab(moving.s3, "--debug", "-H", "regbox", "migrate-storage", "--to", "s3")
    out = must(run)
    secret = json.loads(S3_STATE.read_text())["secret_key"]
    assert secret not in out + run.stderr
    assert "[regbox] storage: changed (copied " in out and "every blob verified" in out
    assert "copied: " in out and "verified: " in out
    for alias in HOSTS:
        assert f"[{alias}] tags: ok (" in out and "tags, each with the digest it had)" in out
    c2 = moving.s3.connect("client2")
    for alias in HOSTS:
        with pinned(c2, alias):
            for image in moving.images:
                assert pull_digest(c2, image) == image.digest, (alias, image)


def test_a_second_run_changes_nothing_and_keeps_the_source(moving: Moving) -> None:
    out = must(fab(moving.s3, "-H", "regbox", "migrate-storage", "--to", "s3"))
    assert "[regbox] storage: unchanged (already on bucket registry)" in out
    assert "--delete-source' removes it" in out


def test_delete_source_keeps_the_disk_when_the_bucket_lacks_a_file(moving: Moving) -> None:
    tree = f"{moving.disk.inventory.registry.data_dir}/docker/registry/v2"
    regbox = moving.disk.connect("regbox")
    link = sh(regbox, f"cd {tree} && find repositories/team/moved0/_manifests -name link | head -1")
    key = f"{ROOT.lstrip('/')}/docker/registry/v2/{link}"
    assert bucket_request(moving.s3, "DELETE", key) == "204"
    try:
        out = fab(moving.s3, "-H", "regbox", "migrate-storage", "--to", "s3", "--delete-source")
    finally:
        assert bucket_request(moving.s3, "PUT", key, f"{tree}/{link}") == "200"
    assert out.returncode == 1, out.stdout + out.stderr
    failed = next(line for line in out.stdout.splitlines() if "migrate-storage: failed" in line)
    assert "not in the bucket with its size" in failed and key in failed, failed
    assert "the disk's copy is kept" in failed
    assert sh(regbox, f"test -f {tree}/{link} && echo kept") == "kept"


def test_delete_source_removes_the_disk_copy_once_the_bucket_has_it(moving: Moving) -> None:
    data = moving.disk.inventory.registry.data_dir
    out = must(fab(moving.s3, "-H", "regbox", "migrate-storage", "--to", "s3", "--delete-source"))
    assert f"[regbox] data {data}: changed (deleted " in out
    assert sh(moving.disk.connect("regbox"), f"ls -A {data}") == ""
    c2 = moving.s3.connect("client2")
    with pinned(c2, "regbox"):
        assert pull_digest(c2, moving.images[4]) == moving.images[4].digest
