"""`fab backup`, `fab restore` and `invoke state.backup/restore` (issue #17) on the lab:
real pushes and pulls during a backup, a corrupted blob on the host, and regbox
destroyed and rebuilt from the backup with clients left as they were."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
from pathlib import Path

import pytest

from lab.engine import Engine
from lab.hosts import host_spec
from lab.settings import Settings
from tasks import users
from tasks.plans.backup import V2, Metadata
from tests.lab.conftest import (
    CA_FILE,
    DOMAIN,
    PASSPHRASE,
    PASSWORD,
    USER,
    Lab,
    Pushed,
    bearer,
    fab,
    invoke,
    login,
    must,
    pull_digest,
    push_image,
    sh,
    trust_by_certs_d,
)

DONE = re.compile(
    r"\[regbox\] backup: changed \(snapshot (\S+): (\d+) repositories, (\d+) tags, (\d+) blobs, "
)


def snapshots(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "snapshots").iterdir())


def record(folder: Path, name: str) -> dict:
    return json.loads((folder / "snapshots" / name / "snapshot.json").read_text())


def complete(snapshot: Path) -> list[str]:
    """Problems of a snapshot, as the registry would meet them: a link naming a blob
    it lacks, a blob not matching its name, a manifest whose config, layers or
    platform manifests are not linked in its repository."""
    data = snapshot / "registry" / V2
    meta = Metadata(
        {
            str(p.relative_to(data / "repositories")): p.read_bytes()
            for p in (data / "repositories").rglob("link")
        }
    )

    def blob(hex_: str) -> Path:
        return data / "blobs" / "sha256" / hex_[:2] / hex_ / "data"

    problems = []
    for hex_ in meta.referenced():
        if not blob(hex_).exists():
            problems.append(f"missing {hex_}")
        elif hashlib.sha256(blob(hex_).read_bytes()).hexdigest() != hex_:
            problems.append(f"corrupt {hex_}")
    for repo, hex_ in meta.revisions():
        if not blob(hex_).exists():
            continue
        manifest = json.loads(blob(hex_).read_bytes())
        layers = [manifest.get("config", {}), *manifest.get("layers", [])]
        for ref in (d["digest"] for d in layers if d):
            if f"{repo}/_layers/sha256/{ref[7:]}/link" not in meta.links:
                problems.append(f"{repo}@{hex_[:12]}: {ref[:19]} not linked")
        for child in (d["digest"] for d in manifest.get("manifests", [])):
            if (repo, child[7:]) not in meta.revisions():
                problems.append(f"{repo}@{hex_[:12]}: platform {child[:19]} missing")
    return problems


def tags_in(snapshot: Path, repo: str) -> set[str]:
    tags = snapshot / "registry" / V2 / "repositories" / repo / "_manifests" / "tags"
    return {p.name for p in tags.iterdir()} if tags.exists() else set()


@pytest.fixture(scope="module")
def first(registry: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Five 8 MiB images from client1, then a first backup."""
    c1 = registry.connect("client1")
    trust_by_certs_d(registry, c1)
    login(c1)
    images = [push_image(c1, mib=8, repo="backup/app") for _ in range(5)]
    folder = tmp_path_factory.mktemp("backups")
    out = must(fab(registry, "-H", "regbox", "backup", "--to", str(folder)))
    match = DONE.search(out)
    assert match, out
    return {"folder": folder, "images": images, "name": match.group(1), "out": out}


def test_a_first_backup_is_a_complete_verified_private_snapshot(registry: Lab, first: dict) -> None:
    folder, name = first["folder"], first["name"]
    snapshot = folder / "snapshots" / name
    assert complete(snapshot) == []
    assert {i.ref.rsplit(":", 1)[1] for i in first["images"]} <= tags_in(snapshot, "backup/app")
    assert record(folder, name)["bytes_transferred"] > 5 * 8 << 20
    for private in (folder, folder / "blobs", folder / "blobs" / "sha256", snapshot):
        assert (private.stat().st_mode & 0o777) == 0o700, private
    assert ((snapshot / "etc-regkit.tar").stat().st_mode & 0o777) == 0o600
    assert "CA, keys, users) has no backup" in first["out"]


def test_a_second_backup_during_a_push_and_a_pull_copies_only_what_is_new(
    registry: Lab, first: dict
) -> None:
    folder = first["folder"]
    c2 = registry.connect("client2")
    trust_by_certs_d(registry, c2)
    login(c2)
    results: dict[str, object] = {}

    def traffic() -> None:
        c1 = registry.connect("client1")
        results["pushed"] = [push_image(c1, repo="backup/during") for _ in range(2)]
        results["pulled"] = pull_digest(registry.connect("client2"), first["images"][0])

    thread = threading.Thread(target=traffic)
    thread.start()
    out = must(fab(registry, "-H", "regbox", "backup", "--to", str(folder)))
    thread.join()
    assert results["pulled"] == first["images"][0].digest
    assert len(results["pushed"]) == 2  # type: ignore[arg-type]
    second = DONE.search(out)
    assert second, out
    snapshot = folder / "snapshots" / second.group(1)
    assert complete(snapshot) == []
    moved = record(folder, second.group(1))["bytes_transferred"]
    assert moved < 0.1 * record(folder, first["name"])["bytes_transferred"]
    assert len(snapshots(folder)) == 2


def test_a_corrupt_blob_fails_the_backup_and_keeps_the_earlier_snapshots(
    registry: Lab, first: dict
) -> None:
    folder = first["folder"]
    before = {n: complete(folder / "snapshots" / n) for n in snapshots(folder)}
    c1, regbox = registry.connect("client1"), registry.connect("regbox")
    image = push_image(c1, repo="backup/bad")
    name, tag = image.ref.removeprefix(f"{DOMAIN}/").split(":")
    auth = bearer(c1, USER, PASSWORD, f"repository:{name}:pull")
    manifest = json.loads(
        sh(
            c1,
            f"curl -sSf -K - --cacert {CA_FILE} "
            "-H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "
            f"https://{DOMAIN}/v2/{name}/manifests/{tag}",
            auth,
        )
    )
    layer = manifest["layers"][0]["digest"].removeprefix("sha256:")
    blob = f"{registry.inventory.registry.data_dir}/{V2}/blobs/sha256/{layer[:2]}/{layer}/data"
    sh(regbox, f"cp -p {blob} /root/blob.orig && printf X | dd of={blob} bs=1 seek=100 "
               "conv=notrunc 2>/dev/null")  # fmt: skip
    try:
        done = fab(registry, "-H", "regbox", "backup", "--to", str(folder))
    finally:
        sh(regbox, f"mv /root/blob.orig {blob}")
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert f"blob sha256:{layer} is corrupt" in output
    assert "Traceback" not in output
    assert {n: complete(folder / "snapshots" / n) for n in snapshots(folder)} == before
    assert not list((folder / "blobs" / "tmp").iterdir())


def test_a_backup_after_a_delete_and_gc_leaves_out_what_gc_left_behind(
    registry: Lab, first: dict
) -> None:
    """distribution's gc deletes blobs but keeps their layer links (distribution#3851)."""
    folder, c1 = first["folder"], registry.connect("client1")
    image = push_image(c1, repo="backup/deleted")
    name = image.ref.removeprefix(f"{DOMAIN}/").split(":")[0]
    admin = users.probe_credential(registry.inventory)[0]
    auth = bearer(c1, users.PROBE_USER, admin, f"repository:{name}:pull,delete")
    status = sh(
        c1,
        f"curl -s -o /dev/null -w '%{{http_code}}' -K - --cacert {CA_FILE} -X DELETE "
        f"https://{DOMAIN}/v2/{name}/manifests/{image.digest}",
        auth,
    )
    assert status == "202"
    must(fab(registry, "-H", "regbox", "gc"))
    out = must(fab(registry, "-H", "regbox", "backup", "--to", str(folder)))
    assert re.search(r"\[regbox\] \d+ links name no blob on the host \(gc leaves them", out), out
    done = DONE.search(out)
    assert done, out
    snapshot = folder / "snapshots" / done.group(1)
    assert complete(snapshot) == []
    assert tags_in(snapshot, name) == set()


def test_prune_keep_keeps_the_newest_snapshots_and_the_blobs_they_need(
    registry: Lab, first: dict
) -> None:
    folder = first["folder"]
    c1 = registry.connect("client1")
    gone = push_image(c1, mib=2, repo="backup/gone")
    must(fab(registry, "-H", "regbox", "backup", "--to", str(folder)))
    name, tag = gone.ref.removeprefix(f"{DOMAIN}/").split(":")
    # The image leaves the registry (its tag is deleted on the host), then two more
    # backups: with --prune-keep 2 the snapshots that held it go, and so do its blobs.
    regbox = registry.connect("regbox")
    repos = f"{registry.inventory.registry.data_dir}/{V2}/repositories"
    sh(regbox, f"rm -r {repos}/{name}")
    held = [n for n in snapshots(folder) if tag in tags_in(folder / "snapshots" / n, name)]
    assert held
    must(fab(registry, "-H", "regbox", "backup", "--to", str(folder)))
    out = must(fab(registry, "-H", "regbox", "backup", "--to", str(folder), "--prune-keep", "2"))
    left = snapshots(folder)
    assert len(left) == 2 and not set(held) & set(left)
    assert "(keeping the 2 newest)" in out and "of blobs no snapshot needs removed" in out
    stored = {p.name for p in (folder / "blobs" / "sha256").glob("*/*")}
    needed = set()
    for n in left:
        data = folder / "snapshots" / n / "registry" / V2 / "blobs" / "sha256"
        needed |= {p.name for p in data.glob("*/*")}
    assert stored == needed
    assert all(complete(folder / "snapshots" / n) == [] for n in left)


def test_restore_over_a_registry_asks_then_moves_its_data_aside(registry: Lab, first: dict) -> None:
    folder, regbox = first["folder"], registry.connect("regbox")
    data = f"{registry.inventory.registry.data_dir}/docker"
    before = sh(regbox, f"find {data} -type f | wc -l")
    refused = fab(registry, "-H", "regbox", "restore", "--from", str(folder))
    assert refused.returncode == 1
    assert "regbox has registry data: add --yes to move it aside and restore" in (
        refused.stdout + refused.stderr
    )
    assert sh(regbox, f"ls -d {data}.before-restore-* 2>/dev/null | wc -l") == "0"
    dry = must(fab(registry, "-H", "regbox", "restore", "--from", str(folder), "--dry-run"))
    assert re.search(
        r"\[regbox\] registry data: changed \(moved aside to \S+ \(kept\) \(dry run\)\)", dry
    )
    assert sh(regbox, f"ls -d {data}.before-restore-* 2>/dev/null | wc -l") == "0"
    assert sh(regbox, f"find {data} -type f | wc -l") == before
    out = must(fab(registry, "-H", "regbox", "restore", "--from", str(folder), "--yes"))
    assert "[regbox] registry data: changed (moved aside to " in out
    aside = sh(regbox, f"ls -d {data}.before-restore-*")
    assert sh(regbox, f"find {aside} -type f | wc -l") == before
    assert "[regbox] verify: ok (push/pull:" in out
    c2 = registry.connect("client2")
    assert pull_digest(c2, first["images"][3]) == first["images"][3].digest
    sh(regbox, f"rm -rf {aside}")


def test_regbox_lost_comes_back_from_the_backup_and_clients_need_nothing(
    registry: Lab, first: dict, tmp_path: Path
) -> None:
    folder = first["folder"]
    b2d = registry.connect("b2d")
    must(fab(registry, "-H", "b2d", "trust-ca"))
    login(b2d)
    images: list[Pushed] = first["images"]
    must(fab(registry, "-H", "regbox", "backup", "--to", str(folder)))
    env = {**registry.env, "REGISTRY_CA_PASSPHRASE": PASSPHRASE}
    state_file = tmp_path / "state.bak"
    must(invoke("state.backup", "--to", str(state_file), env=env))
    # The host is lost: container and disks. A new one comes up under the same name.
    spec = host_spec("regbox")
    engine = Engine(Settings())
    engine.run("rm", "--force", "--volumes", spec.container)
    for volume in spec.volumes:
        engine.run("volume", "rm", volume)
    must(registry.invoke("lab.up"))
    registry.reload()
    # So is this machine's state: a fresh checkout gets it back from the file.
    shutil.rmtree(registry.inventory.state_path)
    must(invoke("state.restore", str(state_file), env=env))
    out = must(fab(registry, "-H", "regbox", "restore", "--from", str(folder)))
    assert "[regbox] registry data: changed (restored from " in out
    assert "[regbox] verify: ok (push/pull:" in out
    c2 = registry.connect("client2")
    login(c2)  # the old password
    for image in images:
        assert pull_digest(c2, image) == image.digest
    # client1 and b2d trusted the CA before; they pull without trust-ca.
    assert pull_digest(registry.connect("client1"), images[1]) == images[1].digest
    assert pull_digest(b2d, images[2]) == images[2].digest
