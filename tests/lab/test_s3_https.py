"""The registry on an S3 service over https whose certificate a private CA signed: the
lab's gateway on :7443, its lab CA given as ``registry.storage.s3.ca_file``. The
registry trusts that CA through SSL_CERT_FILE, never AWS_CA_BUNDLE (with which
distribution 2.8 panics at start).

The module ends by deploying regbox back onto its disk, as the other tests expect.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from lab.store import S3_STATE
from tasks.layout import REGISTRY
from tests.lab.conftest import (
    Lab,
    bucket_objects,
    fab,
    login,
    must,
    pull_digest,
    push_image,
    s3_variant,
    sh,
    trust_by_certs_d,
)

ROOT = f"/regkit-https-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def on_https(registry: Lab, store: Lab) -> Iterator[tuple[Lab, str]]:
    lab = s3_variant(store, "s3-https", ROOT, https=True)
    yield lab, must(fab(lab, "-H", "regbox", "deploy"))
    must(fab(registry, "-H", "regbox", "deploy"))
    lab.inventory_path.unlink()


def test_the_registry_reaches_the_bucket_over_https_with_the_private_ca(
    on_https: tuple[Lab, str],
) -> None:
    lab, deployed = on_https
    endpoint = json.loads(S3_STATE.read_text())["https_endpoint"]
    assert endpoint.startswith("https://") and "[regbox] verify: ok (push/pull: " in deployed
    c1, c2 = lab.connect("client1"), lab.connect("client2")
    for client in (c1, c2):
        trust_by_certs_d(lab, client)
        login(client)
    image = push_image(c1, repo="team/over-https")
    assert pull_digest(c2, image) == image.digest
    keys = bucket_objects(lab, f"{ROOT}/docker/registry/v2/repositories/team/over-https/")
    assert any(image.digest.split(":")[1] in key for key in keys), keys
    env = sh(lab.connect("regbox"), f"docker inspect --format '{{{{.Config.Env}}}}' {REGISTRY}")
    assert "SSL_CERT_FILE=/etc/regkit-s3-ca.crt" in env and "AWS_CA_BUNDLE" not in env
    status = must(fab(lab, "-H", "regbox", "status"))
    assert f"[regbox] storage: bucket registry at {endpoint}: answers HTTP " in status
    assert "the registry reads it (/v2/ 200)" in status
