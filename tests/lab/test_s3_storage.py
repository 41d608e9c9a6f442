"""A registry on S3 storage: regbox deployed with ``registry.storage.driver: s3`` against
the lab's Ceph gateway (the store host), its keys stored with ``invoke
storage.set-credentials``. Images go to the bucket, not to regbox's disk, and the S3
secret is nowhere a user or a neighbour could read it.

The module ends by deploying regbox back onto its disk, as the other tests expect.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lab.store import S3_STATE
from tasks.layout import NETWORK, REGISTRY
from tests.lab.conftest import (
    Lab,
    Pushed,
    bucket_objects,
    fab,
    login,
    must,
    pull_digest,
    push_image,
    run_root,
    s3_variant,
    sh,
    trust_by_certs_d,
)

ROOT = f"/regkit-test-{uuid.uuid4().hex[:8]}"


@dataclass
class OnS3:
    """The lab with regbox on S3: its inventory, the S3 secret, and the deploy's output
    (with --debug: stdout and stderr)."""

    lab: Lab
    secret: str
    deployed: str


@pytest.fixture(scope="module")
def on_s3(registry: Lab, store: Lab) -> Iterator[OnS3]:
    """regbox deployed on S3: a copy of the lab inventory (same state folder) with
    registry.storage set to the lab's bucket, under a root directory of this run."""
    lab = s3_variant(store, "s3-test", ROOT)
    secret = json.loads(S3_STATE.read_text())["secret_key"]
    # At the highest verbosity: Invoke's and Fabric's debug log go to stderr.
    deployed = fab(lab, "--debug", "-H", "regbox", "deploy")
    yield OnS3(lab, secret, must(deployed) + deployed.stderr)
    must(fab(registry, "-H", "regbox", "deploy"))
    lab.inventory_path.unlink()


@pytest.fixture(scope="module")
def pushed(on_s3: OnS3) -> Pushed:
    client = on_s3.lab.connect("client1")
    trust_by_certs_d(on_s3.lab, client)
    login(client)
    return push_image(client, repo="team/on-s3")


def test_a_push_lands_in_the_bucket_and_pulls_elsewhere(on_s3: OnS3, pushed: Pushed) -> None:
    assert "[regbox] verify: ok" in on_s3.deployed
    other = on_s3.lab.connect("client2")
    trust_by_certs_d(on_s3.lab, other)
    login(other)
    assert pull_digest(other, pushed) == pushed.digest
    hexdigest = pushed.digest.split(":")[1]
    keys = bucket_objects(on_s3.lab, f"{ROOT}/docker/registry/v2/repositories/team/on-s3/")
    assert any(hexdigest in key for key in keys), keys
    disk = f"{on_s3.lab.inventory.registry.data_dir}/docker/registry/v2/repositories/team"
    assert "on-s3" not in sh(on_s3.lab.connect("regbox"), f"ls {disk} 2>/dev/null; true")


def test_the_registry_answers_nothing_on_its_s3_bridge(on_s3: OnS3, pushed: Pushed) -> None:
    regbox = on_s3.lab.connect("regbox")
    fmt = f'{{{{(index .NetworkSettings.Networks "{NETWORK}").IPAddress}}}}'
    bridge_ip = sh(regbox, f"docker inspect --format '{fmt}' {REGISTRY}")
    assert bridge_ip
    status, out, err = run_root(
        regbox, f"curl -sS -m 5 -o /dev/null -w '%{{http_code}}' http://{bridge_ip}:5000/v2/"
    )
    # 7: curl could not connect (nothing listens there); a listening registry gives 401.
    assert status == 7, out + err


def test_the_s3_secret_is_in_no_output_argv_or_inspect(on_s3: OnS3, pushed: Pushed) -> None:
    lab, secret = on_s3.lab, on_s3.secret
    regbox = lab.connect("regbox")
    assert "invoke.config.merge" in on_s3.deployed and secret not in on_s3.deployed
    assert secret not in must(fab(lab, "-H", "regbox", "deploy", "--dry-run"))
    assert secret not in must(fab(lab, "-H", "regbox", "status"))
    assert secret not in sh(regbox, f"docker inspect {REGISTRY}")
    # The images built on the host: the needle reaches grep in a file, not in argv.
    images = "$(docker inspect --format '{{.Config.Image}}' regkit-nginx regkit-token)"
    search = f"docker save {images} | tar -xO 2>/dev/null | grep -c -F -f /tmp/needle"
    assert sh(regbox, f"cat > /tmp/needle; {search}; rm -f /tmp/needle", secret) == "0"
    assert secret not in sh(regbox, "ps -eo args")
    modes = sh(regbox, "find /etc/regkit/registry -name config.yml -exec stat -c '%a %U' {} +")
    assert set(modes.splitlines()) == {"600 root"}
