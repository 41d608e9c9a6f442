"""The registry image's layout does not decide which config runs.

registry:3 images read /etc/distribution/config.yml by default, not
/etc/docker/registry where regkit mounts its config; a deploy that left the config
to the image's CMD would serve the image's own (no auth). The lab's ``registry3``
image is the lab registry laid out that way.
"""

from __future__ import annotations

import subprocess
from typing import Any

from lab.engine import Engine
from lab.hosts import host_spec
from lab.images import build_images, image_ref, image_spec
from lab.settings import Settings
from tasks.layout import REGISTRY, REGISTRY_CONFIG
from tasks.report import Report
from tests.lab.conftest import (
    CA_FILE,
    DOMAIN,
    Lab,
    fab,
    inventory_variant,
    must,
    sh,
    trust_by_certs_d,
)


def load_into_regbox(engine: Engine, ref: str) -> None:
    save = subprocess.Popen(engine.cmd("save", ref), stdout=subprocess.PIPE)
    loaded = subprocess.run(
        engine.cmd("exec", "-i", host_spec("regbox").container, "docker", "load", "-q"),
        stdin=save.stdout,
        capture_output=True,
        check=False,
    )
    assert save.wait() == 0 and loaded.returncode == 0, loaded.stderr


def test_a_registry3_layout_serves_regkits_config(registry: Lab) -> None:
    settings, engine = Settings(), Engine(Settings())
    build_images(settings, engine, Report(), (image_spec("registry"), image_spec("registry3")))
    ref = image_ref(image_spec("registry3"), settings)
    default = engine.run("image", "inspect", "--format", "{{json .Config.Cmd}}", ref).stdout
    assert default.strip() == '["/etc/distribution/config.yml"]'
    load_into_regbox(engine, ref)

    def pin(data: dict[str, Any]) -> None:
        data["registry"]["images"]["registry"] = ref

    lab = inventory_variant(registry, "registry3", pin)
    try:
        out = must(fab(lab, "-H", "regbox", "deploy"))
        assert "[regbox] verify: ok" in out
        regbox = lab.connect("regbox")
        running = sh(regbox, f"docker inspect --format '{{{{.Config.Image}}}}' {REGISTRY}")
        assert running == ref
        cmd = sh(regbox, f"docker inspect --format '{{{{json .Config.Cmd}}}}' {REGISTRY}")
        assert cmd == f'["{REGISTRY_CONFIG}"]'
        client = lab.connect("client1")
        trust_by_certs_d(lab, client)
        anonymous = sh(
            client,
            f"curl -s -o /dev/null -w '%{{http_code}}' --cacert {CA_FILE} "
            f"-X POST https://{DOMAIN}/v2/team/anonymous/blobs/uploads/",
        )
        assert anonymous == "401"
    finally:
        must(fab(registry, "-H", "regbox", "deploy"))
        lab.inventory_path.unlink()
