"""The inventory's ``registry.images``: the image references deploy runs, each pinned."""

from __future__ import annotations

import re

from pydantic import field_validator

from tasks.inventory_file import Strict

_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO = re.compile(r"^[a-z0-9]+([._-]+[a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$")


def check_image_ref(ref: str) -> str:
    """Accept ``name:tag`` or ``name@sha256:...`` with a pinned (non-latest) tag."""
    name, _, digest = ref.partition("@")
    if digest and not _DIGEST.match(digest):
        raise ValueError(f"{ref!r} has a malformed digest (expected @sha256:<64 hex>)")
    repo, tag = name, ""
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = name.rsplit(":", 1)
    if not _REPO.match(repo):
        raise ValueError(f"{ref!r} is not a valid image reference")
    if tag and not _TAG.match(tag):
        raise ValueError(f"{ref!r} has an invalid tag")
    if not digest and (not tag or tag == "latest"):
        raise ValueError(
            f"{ref!r} is not pinned; give an explicit version tag (e.g. registry:2.8.3) "
            "or a digest, never 'latest'"
        )
    return ref


class Images(Strict):
    """Image references, each pinned to a tag or digest."""

    registry: str = "registry:2.8.3"
    nginx: str = "nginx:1.27.3-bookworm"
    # The token service's base: an official Python image (its build adds PyJWT).
    token: str = "python:3.12.8-slim-bookworm"  # noqa: S105 - an image, not a secret

    _check = field_validator("registry", "nginx", "token")(
        classmethod(lambda cls, v: check_image_ref(v))
    )
