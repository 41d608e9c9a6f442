"""The inventory's ``hosts``: how regkit reaches each host over SSH, and its role."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from tasks.inventory_checks import check_hostname, check_ssh_user
from tasks.inventory_file import Strict

Flavor = Literal["debian", "rhel", "alpine", "boot2docker"]
Role = Literal["registry", "client"]
Port = Annotated[int, Field(ge=1, le=65535)]

_KEY_TYPE = r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521))"
_HOST_KEY = re.compile(rf"^{_KEY_TYPE} [A-Za-z0-9+/]+=*$")
# A line as ssh-keyscan prints it: the host field (a name, "[name]:port", or several
# separated by commas), then the key.
_KEYSCAN_LINE = re.compile(rf"^(?P<hosts>\S+) (?P<key>{_KEY_TYPE} \S+)$")


class Host(Strict):
    """One SSH host. Unset fields fall back to ~/.ssh/config, then SSH defaults."""

    hostname: str | None = None
    port: Port | None = None
    user: str | None = None
    key_file: str | None = None
    host_key: str | None = None
    sudo: bool = True
    role: Role = "client"
    flavor: Flavor | None = None

    @model_validator(mode="before")
    @classmethod
    def _keyscan_line(cls, data: object) -> object:
        """A ``host_key`` pasted as ssh-keyscan prints it: the host field is checked
        against the host (a line for another host is refused), then dropped."""
        if not isinstance(data, dict) or not isinstance(data.get("host_key"), str):
            return data
        line = _KEYSCAN_LINE.match(" ".join(data["host_key"].split()))
        if not line:
            return data
        names = set(line["hosts"].split(","))
        hostname, port = data.get("hostname"), data.get("port") or 22
        ours = f"[{hostname}]:{port}" if port != 22 else str(hostname)
        hashed = line["hosts"].startswith("|")
        if hostname is not None and not hashed and ours not in names:
            raise ValueError(
                f"host_key: the ssh-keyscan line is for {line['hosts']}, but this host is "
                f"{ours}; scan this host (ssh-keyscan -p {port} {hostname})"
            )
        return {**data, "host_key": line["key"]}

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        return v if v is None else check_hostname(v)

    @field_validator("user")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        return v if v is None else check_ssh_user(v)

    @field_validator("host_key")
    @classmethod
    def _host_key(cls, v: str | None) -> str | None:
        if v is not None and not _HOST_KEY.match(v.strip()):
            raise ValueError(
                "expected a public host key line such as 'ssh-ed25519 AAAA...' "
                "(a line as ssh-keyscan prints it, with the host in front, is taken too)"
            )
        return v.strip() if v else v
