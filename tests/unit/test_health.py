"""Status and expiry: reading what the host printed (the lab proves the reading itself)."""

from __future__ import annotations

import datetime as dt

import pytest

from tasks import certificates, health, prune
from tasks.inventory_storage import S3

NOT_AFTER = "notAfter=Dec 30 03:15:00 2027 GMT;serial=18C15D46;"


def test_served_certificate_is_parsed() -> None:
    not_after, serial = health.served_certificate(NOT_AFTER) or (None, "")
    assert not_after == dt.datetime(2027, 12, 30, 3, 15, tzinfo=dt.UTC)
    assert serial == "18C15D46"
    assert health.served_certificate("") is None


def near(days: int) -> str:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(days=days, hours=1)
    return f"notAfter={when:%b %d %H:%M:%S %Y} GMT;serial=01;"


def test_expiry_problems() -> None:
    key = certificates.new_key("ec-p256")
    ca = certificates.build_ca(key, "org", "a.example", days=3650)
    short_ca = certificates.build_ca(key, "org", "a.example", days=40)
    assert health.expiry_problems(ca, health.served_certificate(near(100)), 30) == []
    [problem] = health.expiry_problems(ca, health.served_certificate(near(10)), 30)
    assert problem.startswith("the served certificate expires in 10 days (under 30)")
    assert health.expiry_problems(ca, None, 30) == [
        "no certificate is served (is the proxy running?)"
    ]
    assert health.expiry_problems(short_ca, health.served_certificate(near(100)), 45) == [
        "the CA expires in 39 days (under 45)"
    ]


def test_status_lines() -> None:
    values = {
        "ctr:regkit-registry": "running|2026-11-28T04:02:07.123Z|registry:2.8.3|0",
        "ctr:regkit-token": "running|2026-11-28T04:02:08.5Z|regkit-token:ab|1",
        "ping": "200",
        "served": near(20),
        "catalog": '{"repositories":["a","b","regkit/probe"]}',
        "disk": "25M",
        "space": "1048576 20971520",
    }
    lines = health.status_lines(values)
    assert (
        lines[0]
        == "regkit-registry: running, since 2026-11-28T04:02:07Z, registry:2.8.3, 0 restarts"
    )
    assert lines[1] == "regkit-nginx: missing"
    assert (
        lines[2] == "regkit-token: running, since 2026-11-28T04:02:08Z, regkit-token:ab, 1 restarts"
    )
    assert lines[3] == "health: /_ping answered 200"
    assert lines[4] == "served certificate: serial 01, 20 days left"
    assert lines[5] == "registry data: 25M; catalog: 2 repositories"
    assert lines[6] == "disk: 1024 MiB free of 20 GiB"
    assert lines[7] == "prune: never ran on this host"


def test_status_lines_on_s3_say_how_the_bucket_is() -> None:
    s3 = S3(endpoint="http://10.0.0.5:7480", bucket="registry")
    values = {"ping": "200", "catalog": '{"repositories":["a"]}', "s3": "200", "v2": "200"}
    lines = health.status_lines(values, s3)
    bucket = "storage: bucket registry at http://10.0.0.5:7480: answers HTTP 200; "
    assert lines[4:6] == [bucket + "the registry reads it (/v2/ 200)", "catalog: 1 repositories"]
    assert not any(line.startswith(("registry data", "disk")) for line in lines)
    assert health.serving(values)


@pytest.mark.parametrize(
    ("s3", "v2", "state"),
    [
        ("000", "503", "no answer to this host; FAILING: the registry's storage check fails"),
        ("403", "", "answers HTTP 403; the registry's view unknown (/v2/ answered nothing)"),
    ],
)
def test_a_failing_bucket_is_said_so(s3: str, v2: str, state: str) -> None:
    assert health.bucket_state({"s3": s3, "v2": v2}).startswith(state)
    assert not health.serving({"ping": "200", "v2": v2})


@pytest.mark.parametrize(
    ("record", "line"),
    [
        (
            '{"finished": "2026-11-29T03:00:02Z", "freed_kib": 3584, "kept_moved": 0, '
            '"manifests_deleted": 10}',
            "last ran 2026-11-29 03:00:02Z: 10 manifests deleted, 3.5 MiB freed",
        ),
        (
            '{"finished": "2026-11-29T03:00:02Z", "freed_kib": 0, "kept_moved": 1, '
            '"manifests_deleted": 0}',
            "last ran 2026-11-29 03:00:02Z: 0 manifests deleted, 1 kept (a push landed), 0 B freed",
        ),
        ("", "never ran on this host"),
        ("{not json", "unreadable record in /etc/regkit/pruned.json"),
        ('{"finished": "2026-11-29T03:00:02Z"}', "unreadable record in /etc/regkit/pruned.json"),
        ("[1]", "unreadable record in /etc/regkit/pruned.json"),
    ],
)
def test_last_prune(record: str, line: str) -> None:
    assert health.last_prune(record) == line


def test_the_prune_record_reads_back() -> None:
    at = dt.datetime(2026, 11, 29, 3, 0, 2, 999, tzinfo=dt.UTC)
    written = prune.record(at, deleted=10, skipped=0, freed_kib=3584).decode()
    assert written == (
        '{"finished": "2026-11-29T03:00:02Z", "freed_kib": 3584, "kept_moved": 0, '
        '"manifests_deleted": 10}\n'
    )
    assert health.last_prune(written.strip()) == (
        "last ran 2026-11-29 03:00:02Z: 10 manifests deleted, 3.5 MiB freed"
    )


@pytest.mark.parametrize(
    ("space", "warning"),
    [
        ("0 98304", "the registry's disk is full (0 MiB free of 96 MiB under /srv/r/data): "),
        ("512 98304", "the registry's disk is full"),
        ("9000 98304", "the registry's disk is nearly full (9 MiB free of 96 MiB under "),
        ("10000 98304", None),
        ("", None),
        ("n/a", None),
    ],
)
def test_disk_problems(space: str, warning: str | None) -> None:
    problems = health.disk_problems({"space": space}, "/srv/r/data")
    if warning is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith(warning)
        assert problems[0].endswith("free space there, or delete tags and run 'fab gc'")


RUNNING = "running|2026-11-30T01:00:00Z|registry:2.8.3|0"


def test_a_host_without_regkit_containers_is_not_deployed() -> None:
    missing = {f"ctr:{name}": "missing" for name in health.CORE}
    assert not health.deployed_here(missing)
    assert not health.deployed_here({})
    assert health.deployed_here({**missing, "ctr:regkit-nginx": RUNNING})


def test_why_a_deployed_host_does_not_serve() -> None:
    values = {f"ctr:{name}": RUNNING for name in health.CORE}
    values |= {"ctr:regkit-registry": "exited|2026-11-30T01:00:00Z|registry:2.8.3|0"}
    values |= {"ping": "200", "v2": "502"}
    assert not health.serving(values)
    assert health.not_serving(values) == (
        "regkit-registry not running; /_ping answered 200, /v2/ with a token 502"
    )
