"""Where the lab lives and what it names: paths, names, Settings and LabError.

The lab keeps its images in ``lab/images``, writes ``lab/inventory.yaml`` and its
state (ssh key, the PKI a deploy makes for the lab) in ``lab/state``; every
container, volume and network it makes is named ``regkit-lab...`` and labelled
``org.regkit.lab``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from invoke import Context

from tasks.errors import RegkitError

LAB_DIR = Path(__file__).resolve().parent
IMAGES_DIR = LAB_DIR / "images"
# Files several images copy (lab/images.py: ImageSpec.common); not an image itself.
COMMON_DIR = IMAGES_DIR / "common"
INVENTORY = LAB_DIR / "inventory.yaml"
# The same inventory with the registry on store's bucket (invoke lab.s3-inventory).
S3_INVENTORY = LAB_DIR / "inventory-s3.yaml"
STATE_DIR = LAB_DIR / "state"
SSH_KEY = STATE_DIR / "ssh" / "id_ed25519"
# Pushes one image with a chosen creation date through the registry's API (see its header).
PUSH_IMAGE = LAB_DIR / "push-image.sh"

DOCKER_CLI = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
PREFIX = "regkit-lab"
LABEL = "org.regkit.lab"
NETWORK = PREFIX
DOMAIN = "registry.lab.test"
BOOTED = "/run/regkit-lab.booted"
BOOT_TIMEOUT = 120.0


class LabError(RegkitError):
    """The lab cannot be built, started or reached."""


@dataclass(frozen=True)
class Settings:
    """Where the lab keeps its engine and images, and where packages come from."""

    root: str = "/var/lib/regkit-lab"
    run_dir: str = "/run/regkit-lab"
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"

    @classmethod
    def from_context(cls, c: Context) -> Settings:
        return cls(**{k: str(v) for k, v in c.config.lab.items()})

    @property
    def socket(self) -> str:
        return f"unix://{self.run_dir}/docker.sock"
