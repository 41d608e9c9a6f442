"""A registry host that cannot pull the pinned images gets them over SSH (--ship-images).

The lab has no Docker Hub at all: regbox's engine has the pinned images only because
``lab.up`` loads them. Here one is removed, as on a fresh air-gapped host: a plain
deploy must stop before any change with one line naming the image and the flag, and
``--ship-images`` must carry exactly that image (from this machine's Docker: the lab's
engine, the way an operator's Docker has the images; or from another host's), with
the same image ID as the source.
"""

from __future__ import annotations

import subprocess

import fabric

from lab.engine import Engine
from lab.hosts import host_spec
from lab.settings import Settings
from tests.lab.conftest import Lab, fab, must, sh

# What a failed deploy must leave exactly as it was: the files regkit placed, and the
# containers and images of the host.
STATE = (
    "find /etc/regkit -type f -exec sha256sum {} + | sort; "
    "docker ps -a --format '{{.Names}} {{.Image}} {{.Status}}' | sort; "
    "docker image ls --format '{{.Repository}}:{{.Tag}} {{.ID}}' | sort"
)


def without_image(lab: Lab, regbox: fabric.Connection, ref: str) -> str:
    """Undeploy regbox (its data stays) and remove ``ref`` from its engine; return the
    host's state after that."""
    must(fab(lab, "-H", "regbox", "undeploy"))
    sh(regbox, f"docker rmi {ref} >/dev/null")
    return sh(regbox, STATE)


def local_docker(settings: Settings) -> dict[str, str]:
    """The environment of an operator whose Docker is the lab's engine."""
    return {"DOCKER_HOST": settings.socket}


def test_a_host_that_cannot_pull_gets_the_missing_image_over_ssh(registry: Lab) -> None:
    lab, settings = registry, Settings()
    images = lab.inventory.registry.images
    regbox = lab.connect("regbox")
    source_id = Engine(settings).image_id(images.registry)
    before = without_image(lab, regbox, images.registry)

    plain = fab(lab, "-H", "regbox", "deploy")
    assert plain.returncode != 0
    hint = [line for line in plain.stdout.splitlines() if "--ship-images" in line]
    assert len(hint) == 1, plain.stdout
    assert f"image {images.registry} is not on the host, and pulling it failed" in hint[0]
    assert "Traceback" not in plain.stdout + plain.stderr
    assert sh(regbox, STATE) == before

    shipped = must(fab(lab, "-H", "regbox", "deploy", "--ship-images", env=local_docker(settings)))
    assert (
        f"[regbox] image {images.registry}: changed (shipped from this machine's Docker" in shipped
    )
    assert "layers as there" in shipped
    assert shipped.count("shipped from") == 1, shipped
    assert "[regbox] verify: ok" in shipped
    assert sh(regbox, f"docker image inspect --format '{{{{.Id}}}}' {images.registry}") == source_id

    again = must(fab(lab, "-H", "regbox", "deploy", "--ship-images", env=local_docker(settings)))
    assert "shipped" not in again and "0 changed, " in again and ": no changes" in again, again


def test_images_come_from_another_host_that_has_them(registry: Lab) -> None:
    lab, settings = registry, Settings()
    engine = Engine(settings)
    ref = lab.inventory.registry.images.registry
    regbox, client1 = lab.connect("regbox"), lab.connect("client1")
    sh(client1, f"docker rmi {ref} >/dev/null 2>&1; true")
    before = without_image(lab, regbox, ref)

    lacking = fab(lab, "-H", "regbox", "deploy", "--images-from", "client1")
    assert lacking.returncode != 0
    assert f"{ref} is missing on the host, and client1's Docker does not have it either" in (
        lacking.stdout
    )
    assert sh(regbox, STATE) == before

    save = subprocess.Popen(engine.cmd("save", ref), stdout=subprocess.PIPE)
    load = engine.cmd("exec", "-i", host_spec("client1").container, "docker", "load", "-q")
    assert subprocess.run(load, stdin=save.stdout, capture_output=True, check=False).returncode == 0
    assert save.wait() == 0

    out = must(fab(lab, "-H", "regbox", "deploy", "--images-from", "client1"))
    assert f"[regbox] image {ref}: changed (shipped from client1's Docker over SSH" in out
    assert "[regbox] verify: ok" in out
    sh(client1, f"docker rmi {ref} >/dev/null")
