"""Backups: which blobs to copy, what a snapshot holds, which snapshots go (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from tasks.plans import backup
from tasks.plans.backup import Metadata

A, B, C, M = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


def link(hex_: str) -> bytes:
    return f"sha256:{hex_}".encode()


def metadata() -> Metadata:
    """team/app:v1 -> manifest M (config C, layer A); layer B uploaded, not yet used."""
    return Metadata(
        {
            "team/app/_manifests/tags/v1/current/link": link(M),
            f"team/app/_manifests/tags/v1/index/sha256/{M}/link": link(M),
            f"team/app/_manifests/revisions/sha256/{M}/link": link(M),
            f"team/app/_layers/sha256/{A}/link": link(A),
            f"team/app/_layers/sha256/{B}/link": link(B),
            f"team/app/_layers/sha256/{C}/link": link(C),
        }
    )


def test_snapshot_names_sort_by_time() -> None:
    at = dt.datetime(2026, 11, 29, 17, 3, 2, 999, tzinfo=dt.UTC)
    assert backup.snapshot_name(at, "regbox") == "20261129T170302Z-regbox"
    taken = ["20261129T170302Z-regbox", "20261129T170303Z-regbox"]
    assert backup.snapshot_name(at, "regbox", taken) == "20261129T170304Z-regbox"
    names = ["20261129T170302Z-regbox", "notes.txt", "20261128T010000Z-regbox",
             ".partial-20261130T000000Z-regbox", "20261130T000000Z-Other"]  # fmt: skip
    assert backup.newest_first(names) == [
        "20261130T000000Z-Other",
        "20261129T170302Z-regbox",
        "20261128T010000Z-regbox",
    ]
    assert backup.newest_first(names, "regbox") == [names[0], "20261128T010000Z-regbox"]


def test_prune_keep_counts_the_host_s_own_snapshots() -> None:
    names = ["20261129T170302Z-regbox", "20261128T010000Z-regbox", "20261130T000000Z-other"]
    assert backup.to_remove(names, 1, "regbox") == ["20261128T010000Z-regbox"]
    assert backup.to_remove(names, 5, "regbox") == []
    assert backup.to_remove(names, 1, "other") == []
    with pytest.raises(ValueError, match="keep at least one"):
        backup.to_remove(names, 0, "regbox")


def test_restore_picks_the_host_s_newest_or_asks() -> None:
    one = ["20261129T170302Z-regbox", "20261128T010000Z-regbox"]
    assert backup.pick(one, "regbox", "") == "20261129T170302Z-regbox"
    assert backup.pick(one, "newhost", "") == "20261129T170302Z-regbox"  # one host only
    assert backup.pick(one, "regbox", "20261128T010000Z-regbox") == "20261128T010000Z-regbox"
    two = [*one, "20261130T000000Z-other"]
    assert backup.pick(two, "regbox", "") == "20261129T170302Z-regbox"
    with pytest.raises(ValueError, match="snapshots of other, regbox, none of newhost"):
        backup.pick(two, "newhost", "")
    with pytest.raises(ValueError, match="no snapshot 'x'; there are: "):
        backup.pick(two, "regbox", "x")
    with pytest.raises(ValueError, match="no snapshot here"):
        backup.pick(["notes.txt"], "regbox", "")


def test_the_blob_list_keeps_only_blobs() -> None:
    text = "\n".join(
        [
            f"1234 sha256/aa/{A}/data",
            f"5 sha256/bb/{B}/data",
            f"9 sha256/cc/{C}/startedat",  # not a blob
            f"9 sha256/zz/{C}/data",  # wrong fan-out folder
            "9 sha256/cc/short/data",
            "",
        ]
    )
    assert backup.parse_blob_list(text) == {A: 1234, B: 5}


def test_link_targets() -> None:
    assert backup.link_target(link(A) + b"\n") == A
    assert backup.link_target(b"sha512:" + b"a" * 128) is None
    assert backup.link_target(b"garbage") is None


def manifests(extra: dict[str, dict] | None = None) -> dict[str, dict]:
    """M: config C, layer A (as the registry stores it)."""
    return {M: {"config": {"digest": f"sha256:{C}"}, "layers": [{"digest": f"sha256:{A}"}]},
            **(extra or {})}  # fmt: skip


def test_metadata_reads_tags_revisions_and_references() -> None:
    meta = metadata()
    assert meta.tags() == {("team/app", "v1"): M}
    assert meta.revisions() == {("team/app", M)}
    assert meta.repositories() == {"team/app"}
    assert meta.referenced() == {A, B, C, M}
    assert meta.drop_unservable(manifests().get) == []


def test_links_to_blobs_gc_deleted_and_empty_links_are_left_out() -> None:
    meta = metadata()
    meta.links["team/app/_layers/sha256/" + "e" * 64 + "/link"] = link("e" * 64)
    meta.links["team/app/_manifests/tags/v2/current/link"] = b""  # caught mid-rewrite
    on_host = {A, B, C, M}
    gone = meta.drop_links(lambda _, hex_: hex_ is not None and hex_ in on_host)
    assert gone == [
        "team/app/_layers/sha256/" + "e" * 64 + "/link",
        "team/app/_manifests/tags/v2/current/link",
    ]
    assert meta.referenced() == on_host


def test_a_manifest_missing_a_layer_and_its_tags_are_left_out() -> None:
    meta = metadata()
    del meta.links[f"team/app/_layers/sha256/{A}/link"]
    assert meta.drop_unservable(manifests().get) == [
        f"team/app/_manifests/revisions/sha256/{M}/",
        "team/app/_manifests/tags/v1/",
    ]
    assert meta.tags() == {}
    assert meta.revisions() == set()


def test_a_tag_whose_revision_was_deleted_meanwhile_is_left_out() -> None:
    meta = metadata()
    del meta.links[f"team/app/_manifests/revisions/sha256/{M}/link"]
    assert meta.drop_unservable(manifests().get) == ["team/app/_manifests/tags/v1/"]
    assert not [p for p in meta.links if "/tags/" in p]


def test_an_index_needs_its_platform_manifests() -> None:
    index = "f" * 64
    meta = metadata()
    meta.links[f"team/app/_manifests/revisions/sha256/{index}/link"] = link(index)
    meta.links["team/app/_manifests/tags/multi/current/link"] = link(index)
    docs = manifests({index: {"manifests": [{"digest": f"sha256:{M}"}]}})
    assert meta.drop_unservable(docs.get) == []
    del meta.links[f"team/app/_manifests/revisions/sha256/{M}/link"]
    assert meta.drop_unservable(docs.get) == [
        f"team/app/_manifests/revisions/sha256/{index}/",
        "team/app/_manifests/tags/v1/",
        "team/app/_manifests/tags/multi/",  # found in the next round, once the index went
    ]


def test_only_missing_blobs_are_fetched() -> None:
    assert backup.blobs_to_fetch({A, B, C, M}, stored={A, C}) == [B, M]
    assert backup.blobs_to_fetch({A}, stored={A}) == []


def test_the_summary_line() -> None:
    summary = backup.Summary("20261129T170302Z-regbox", "regbox", 3, 7, 20, 5 << 20, 1 << 20)
    assert summary.line() == (
        "snapshot 20261129T170302Z-regbox: 3 repositories, 7 tags, 20 blobs, "
        "1.0 MiB transferred of 5.0 MiB"
    )


def test_the_restore_plan_moves_existing_data_aside_first() -> None:
    record = {"tags": 7, "blobs": 20, "bytes_total": 5 << 20}
    at = dt.datetime(2026, 11, 29, 17, 3, 2, tzinfo=dt.UTC)
    over = backup.restore_plan("S", record, {"data": "/srv/r/docker/registry"}, "/srv/r", at)
    assert over.steps() == [
        ("registry data", "moved aside to /srv/r/docker.before-restore-20261129T170302Z (kept)"),
        ("registry data", "restored from S: 7 tags, 20 blobs, 5.0 MiB"),
        ("/etc/regkit", "restored from S"),
    ]
    fresh = backup.restore_plan("S", record, {"data": ""}, "/srv/r", at)
    assert fresh.aside == ""
    assert [step for step, _ in fresh.steps()] == ["registry data", "/etc/regkit"]
