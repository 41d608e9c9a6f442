"""The accounts plan: which of the password file and the rights file a registry host
needs (pure).

nginx reads the password file on every request, and the token service reads the
rights file whenever it changes, so an upload is all a change of users or rights
needs: no rebuild, no restart, no reload.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks import scripts
from tasks.errors import RemoteError
from tasks.facts import parse_values
from tasks.layout import AUTH_FILE, DEPLOYED, NGINX, RIGHTS_FILE, TOKEND
from tasks.remote.upload import Upload

# What a host that was never deployed gets instead of the files.
NOT_DEPLOYED = "never deployed here: goes live with the first deploy"


@dataclass(frozen=True)
class AccountFacts:
    # path -> "<sha256> <mode> <uid> <gid>", for the files that exist
    files: dict[str, str]
    deployed: bool
    running: frozenset[str]  # which of nginx and the token service run


def facts_script() -> str:
    return scripts.script(
        "password-facts",
        paths=[AUTH_FILE, RIGHTS_FILE],
        deployed=DEPLOYED,
        running_format="{{.Name}} {{.State.Running}}",
        containers=[NGINX, TOKEND],
    )


def parse_facts(output: str) -> AccountFacts:
    values = parse_values(output)
    files = {key[5:]: value for key, value in values.items() if key.startswith("file:")}
    running = frozenset(name for name in (NGINX, TOKEND) if values.get(f"running:{name}") == "true")
    return AccountFacts(files, values.get("deployed") == "yes", running)


@dataclass(frozen=True)
class AccountPlan:
    uploads: tuple[Upload, ...]
    skip: str = ""  # why nothing is done on this host, if it is skipped


def plan(alias: str, wanted: list[Upload], facts: AccountFacts) -> AccountPlan:
    """The uploads the host needs; skipped when it was never deployed (the first deploy
    brings the files), refused when what reads them is not running."""
    if not facts.deployed:
        return AccountPlan((), NOT_DEPLOYED)
    stopped = [name for name in (NGINX, TOKEND) if name not in facts.running]
    if stopped:
        raise RemoteError(
            f"{alias}: {' and '.join(stopped)} not running here; run 'fab -H {alias} deploy'"
        )
    return AccountPlan(tuple(f for f in wanted if facts.files.get(f.path) != f.fact))
