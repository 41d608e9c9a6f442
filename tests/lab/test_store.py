"""The lab's S3 service: store runs Ceph's RADOS Gateway from Debian's packages,
started by ``invoke lab.up --scale-out`` (the ``store`` fixture). Registry hosts, and
the containers inside them, reach it by IP with the per-lab keys of lab/state/s3.json;
its bucket keeps its objects through a reboot; store is never a regkit host."""

from __future__ import annotations

import json
import re
import uuid

import fabric

from lab.engine import Engine
from lab.hosts import host_spec
from lab.settings import INVENTORY, Settings
from lab.store import S3_STATE, lab_ip
from tests.lab.conftest import Lab, must, sh

STORE = host_spec("store").container
# Declared as the request's payload hash: the gateway then signs no body.
UNSIGNED = "-H 'x-amz-content-sha256: UNSIGNED-PAYLOAD'"
# The sha256 of an empty body, which Ceph 16's gateway wants signed on bodiless requests.
EMPTY = (
    "-H 'x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'"
)


def credentials() -> dict[str, str]:
    return json.loads(S3_STATE.read_text())


def s3(conn: fabric.Connection, creds: dict[str, str], args: str, secret: str = "") -> str:
    """curl, SigV4-signed, on ``conn``: the key pair reaches it as a config on stdin
    (``-K -``), never in argv. Prints the HTTP status."""
    config = f'user = "{creds["access_key"]}:{secret or creds["secret_key"]}"\n'
    sigv4 = f"aws:amz:{creds['region']}:s3"
    return sh(conn, f"curl -sS -K - --aws-sigv4 {sigv4} -w '%{{http_code}}' {args}", config)


def put_object(conn: fabric.Connection, creds: dict[str, str], key: str) -> str:
    """PUT 1 MiB of random bytes from ``conn`` as ``key``; return their sha256."""
    url = f"{creds['endpoint']}/{creds['bucket']}/{key}"
    sh(conn, "head -c 1M /dev/urandom > /tmp/s3-object")
    assert s3(conn, creds, f"-o /dev/null {UNSIGNED} -T /tmp/s3-object {url}") == "200"
    return sh(conn, "sha256sum < /tmp/s3-object && rm /tmp/s3-object").split()[0]


def get_object(conn: fabric.Connection, creds: dict[str, str], key: str) -> str:
    """GET ``key`` on ``conn``; return the sha256 of what the gateway served."""
    url = f"{creds['endpoint']}/{creds['bucket']}/{key}"
    assert s3(conn, creds, f"-o /tmp/s3-got {EMPTY} {url}") == "200"
    return sh(conn, "sha256sum < /tmp/s3-got && rm /tmp/s3-got").split()[0]


def test_the_keys_are_private_per_lab_and_store_is_no_regkit_host(store: Lab) -> None:
    creds = credentials()
    assert S3_STATE.stat().st_mode & 0o777 == 0o600
    assert set(creds) == {
        "endpoint",
        "https_endpoint",
        "region",
        "bucket",
        "access_key",
        "secret_key",
    }
    ip = lab_ip(Engine(Settings()), STORE)
    assert creds["endpoint"] == f"http://{ip}:7480"
    assert creds["https_endpoint"] == f"https://{ip}:7443"
    assert re.fullmatch(r"http://\d+\.\d+\.\d+\.\d+:7480", creds["endpoint"])
    assert creds["bucket"] == "registry"
    assert "store" not in store.inventory.hosts
    assert creds["secret_key"] not in INVENTORY.read_text()
    processes = Engine(Settings()).exec(STORE, "ps -eo args")
    assert "radosgw" in processes
    assert creds["secret_key"] not in processes


def test_regbox_and_its_containers_reach_s3_by_ip(store: Lab) -> None:
    creds = credentials()
    bucket = f"{creds['endpoint']}/{creds['bucket']}"
    with store.connect("regbox") as conn:
        assert s3(conn, creds, f"-o /dev/null {EMPTY} {bucket}") == "200"
        assert s3(conn, creds, f"-o /dev/null {EMPTY} {bucket}", secret="wrong") == "403"
        anonymous = sh(conn, f"curl -s -o /dev/null -w '%{{http_code}}' {bucket}")
        assert anonymous == "403"
        # A registry runs nested, where no lab name resolves: the IP URL must do.
        fetch = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).status)"
        image = store.inventory.registry.images.token
        nested = sh(conn, f"docker run --rm {image} python3 -c '{fetch}' {creds['endpoint']}/")
        assert nested == "200"


def test_an_object_round_trips_through_the_gateway(store: Lab) -> None:
    creds = credentials()
    key = f"round-trip/{uuid.uuid4().hex}"
    with store.connect("regbox") as conn:
        digest = put_object(conn, creds, key)
        assert get_object(conn, creds, key) == digest
        # The prefix encoded as SigV4 signs it: curl would send its slash as it is.
        prefix = key.replace("/", "%2F")
        bucket = f"{creds['endpoint']}/{creds['bucket']}"
        listing = s3(conn, creds, f"-o - {EMPTY} '{bucket}?prefix={prefix}'")
        assert f"<Key>{key}</Key>" in listing


def test_status_says_s3_answers(store: Lab) -> None:
    out = must(store.invoke("lab.status"))
    assert re.search(r"store\s+running, ssh \S+ answers, s3 16\.2\.\S+ answers", out)


def test_a_reboot_keeps_the_buckets_objects(store: Lab) -> None:
    key = f"reboot/{uuid.uuid4().hex}"
    with store.connect("regbox") as conn:
        digest = put_object(conn, credentials(), key)
    out = must(store.invoke("lab.reboot", "store"))
    assert "[store] reboot: changed (restarted, disk kept" in out
    with store.connect("regbox") as conn:
        assert get_object(conn, credentials(), key) == digest
