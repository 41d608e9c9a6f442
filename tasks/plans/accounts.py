"""The password file plan: does a registry host need the local password file? (pure)

nginx reads the file on every request, so an upload is all a change of users
needs: no rebuild, no restart, no reload.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks import scripts
from tasks.errors import RemoteError
from tasks.facts import parse_values
from tasks.layout import AUTH_FILE, NGINX
from tasks.remote.upload import Upload


@dataclass(frozen=True)
class PasswordFacts:
    file: str  # "<sha256> <mode> <uid> <gid>" of the host's password file, or ""
    proxy_running: bool


def facts_script() -> str:
    return scripts.script(
        "password-facts",
        auth_file=AUTH_FILE,
        running_format="{{.State.Running}}",
        nginx=NGINX,
    )


def parse_facts(output: str) -> PasswordFacts:
    values = parse_values(output)
    return PasswordFacts(values.get(f"file:{AUTH_FILE}", ""), values.get("nginx") == "true")


def plan(alias: str, wanted: Upload, facts: PasswordFacts) -> Upload | None:
    """The upload the host needs, or None when its file is already the wanted one."""
    if not facts.proxy_running:
        raise RemoteError(
            f"{alias}: the registry's proxy is not running here; run 'fab -H {alias} deploy'"
        )
    return None if facts.file == wanted.fact else wanted
