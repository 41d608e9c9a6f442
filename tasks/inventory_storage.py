"""The inventory's ``registry.storage``: the host's disk (``filesystem``), or an S3 bucket.

The S3 service's keys are never in the inventory: ``invoke storage.set-credentials``
keeps them in the local state, and they reach a host only inside the registry's
0600 config.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, StringConstraints, field_validator, model_validator

from tasks.inventory_file import Strict, base_url

MIB = 1024 * 1024


class S3(Strict):
    """Where in S3 the registry keeps its data, and how it talks to the service."""

    # The service's URL, scheme and host (and port): https://s3.example.com, http://10.0.0.5:7480.
    endpoint: str
    region: str = "us-east-1"
    bucket: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")]
    root_directory: Annotated[str, StringConstraints(pattern=r"^(/[A-Za-z0-9._-]+)*/?\Z")] = "/"
    # HTTPS to the service; follows the endpoint's scheme unless set (then it must agree).
    secure: bool | None = None
    # Parts of a multipart upload; S3 wants at least 5 MiB.
    chunk_size: Annotated[int, Field(ge=5 * MIB, le=5 * 1024 * MIB)] = 10 * MIB
    # Send pulls to the storage with a signed URL: only when every client can reach it.
    redirect: bool = False
    # The CA of an https endpoint whose certificate no public CA signed (a PEM file here,
    # relative to the inventory): the registry trusts it besides the system's.
    ca_file: str | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        keys = "no keys in the endpoint; they belong in the local state: "
        return base_url(
            v,
            "the S3 service",
            keys + "invoke storage.set-credentials",
            "the bucket is separate",
        )

    @model_validator(mode="after")
    def _secure(self) -> Self:
        https = self.endpoint.startswith("https://")
        if self.secure is not None and self.secure != https:
            raise ValueError(
                f"secure is {str(self.secure).lower()} but the endpoint is {self.endpoint}; "
                "leave secure out (it follows the endpoint) or make them agree"
            )
        if self.ca_file and not https:
            raise ValueError(
                f"ca_file is for an https endpoint, and the endpoint is {self.endpoint}; "
                "remove ca_file or use https://"
            )
        return self

    @property
    def https(self) -> bool:
        return self.endpoint.startswith("https://")


class Storage(Strict):
    """``driver: filesystem`` (the data under ``registry.data_dir``) or ``driver: s3``."""

    driver: Literal["filesystem", "s3"] = "filesystem"
    s3: S3 | None = None

    @model_validator(mode="after")
    def _settings(self) -> Self:
        if self.driver == "s3" and self.s3 is None:
            raise ValueError("driver is s3: say where under s3: (endpoint, bucket, ...)")
        if self.driver == "filesystem" and self.s3 is not None:
            raise ValueError("s3: settings given, but driver is filesystem; set driver: s3")
        return self
