"""The inventory's ``registry.mirror``: a pull-through cache of Docker Hub (or another
upstream) on every registry host.

With the section present, deploy runs a second registry in proxy mode beside the
team's own, behind the same nginx and certificate, at ``https://<domain>:<port>``.
The upstream's login, if it needs one, is never in the inventory: ``invoke
mirror.set-credentials`` keeps it in the local state.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, field_validator, model_validator

from tasks.inventory_checks import check_data_dir
from tasks.inventory_file import Strict, base_url

DOCKER_HUB = "https://registry-1.docker.io"
# A host path two folders deep at least, with no "." or ".." part (as registry.data_dir).
DataDir = Annotated[str, StringConstraints(pattern=r"^(/(?!\.\.?(/|$))[A-Za-z0-9._-]+){2,}/?\Z")]


class Mirror(Strict):
    """Where the mirror pulls from, where clients reach it and where it keeps its cache."""

    # The registry it caches: scheme, host and port only (Docker Hub's by default).
    upstream: str = DOCKER_HUB
    # The port nginx publishes the mirror on, under the registry's name and certificate.
    port: Annotated[int, Field(ge=1, le=65535)] = 5443
    # Its cache on each registry host, apart from the registry's data.
    data_dir: DataDir = "/var/lib/regkit/mirror"
    # The upstream's CA when no public CA signed its certificate (a PEM file here,
    # relative to the inventory).
    ca_file: str | None = None

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, v: str) -> str:
        login = "no login in the URL; it belongs in the local state: "
        return base_url(
            v,
            "a registry",
            login + "invoke mirror.set-credentials",
            "a mirror caches a whole registry",
        )

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, v: str) -> str:
        return check_data_dir(v)

    @model_validator(mode="after")
    def _ca(self) -> Mirror:
        if self.ca_file and not self.upstream.startswith("https://"):
            raise ValueError(
                f"ca_file is for an https upstream, and the upstream is {self.upstream}; "
                "remove ca_file or use https://"
            )
        return self


def apart(registry_data: str, mirror: Mirror | None, registry_port: int) -> None:
    """Refuse a mirror that would share the registry's port or data (ValueError)."""
    if mirror is None:
        return
    if mirror.port == registry_port:
        raise ValueError(
            f"mirror.port {mirror.port} is the registry's port; give the mirror a port of its own"
        )
    one, other = registry_data.rstrip("/") + "/", mirror.data_dir.rstrip("/") + "/"
    if one.startswith(other) or other.startswith(one):
        raise ValueError(
            f"mirror.data_dir {mirror.data_dir} overlaps data_dir {registry_data}; the "
            "mirror's cache is kept apart from pushed images: give it a folder of its own"
        )
