"""``trust-ca --login``: each runtime on a host logs in where it keeps credentials.

Docker in root's Docker config; podman, buildah and skopeo in root's auth file
(``REGISTRY_AUTH_FILE``, else ``/run/containers/0/auth.json``: under /run, so a
reboot forgets it). containerd keeps none: Kubernetes pulls with an image pull
secret, so the line to make one is printed and nothing is stored.
"""

from __future__ import annotations

import base64
import hashlib
import shlex

from tasks import scripts
from tasks.inventory import Inventory
from tasks.plans.trust import TrustFacts, TrustPlan
from tasks.remote.target import Target
from tasks.report import Report


def login_script(
    inv: Inventory, tool: str, user: str, password: str, local_user: str = ""
) -> tuple[str, str]:
    """The script that logs ``tool`` in (docker, podman, skopeo or buildah), and its stdin;
    Docker into ``local_user``'s config rather than root's, if given.

    Only if the stored credential differs: it is compared by the SHA-256 of its
    ``auth`` value, so nothing secret comes back, and the password travels on stdin.
    """
    addr = inv.registry.address
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    wanted = hashlib.sha256(auth.encode()).hexdigest()
    script = scripts.script(
        "registry-login",
        tool=tool,
        auth_pattern=f'"{addr}":{{"auth":"[^"]*"',
        user=user,
        address=addr,
        local_user=local_user,
    )
    return script, f"{wanted}\n{password}\n"


def logout_script(inv: Inventory, tool: str, dry_run: bool = False) -> str:
    """The script that removes ``tool``'s stored login for the registry, if any (with
    ``dry_run``, only says whether there is one)."""
    return scripts.script(
        "registry-logout", tool=tool, address=inv.registry.address, dry_run=dry_run
    )


def remove(
    inv: Inventory, target: Target, report: Report, facts: TrustFacts, dry_run: bool
) -> None:
    """Log each runtime out of the registry (untrust-ca): what trust-ca --login stored,
    for root and, for Docker, for every local user."""
    tools = (["docker"] if facts.docker else []) + ([facts.login_tool] if facts.login_tool else [])
    suffix = " (dry run)" if dry_run else ""
    for tool in tools:
        out = target.check(logout_script(inv, tool, dry_run), f"{tool} logout").stdout
        for line in out.splitlines():
            if line.startswith("removed "):
                report.changed(target.alias, f"{tool} login", f"{line}{suffix}")


def kubernetes_secret(inv: Inventory, user: str) -> str:
    """Commands that give Kubernetes this login with the password never in argv.

    Not ``kubectl create secret docker-registry --docker-password=...``: that puts
    the password in kubectl's argv. A Docker config folder of its own holds only
    this login (docker asks for the password), and kubectl reads the file.
    """
    addr = shlex.quote(inv.registry.address)
    return (
        f"docker --config DIR login -u {shlex.quote(user)} {addr} && kubectl create secret generic"
        " regkit-pull --type=kubernetes.io/dockerconfigjson"
        " --from-file=.dockerconfigjson=DIR/config.json"
    )


def log_in(
    inv: Inventory,
    target: Target,
    report: Report,
    tool: str,
    user: str,
    password: str,
    local_user: str = "",
) -> None:
    script, stdin = login_script(inv, tool, user, password, local_user)
    out = target.feed(script, stdin.encode(), f"{tool} login as {user}").strip()
    status, _, where = out.partition(" ")
    whose = f"{local_user}'s" if local_user else "root's"
    why = f"{user} at {inv.registry.address}, in {whose} {where}"
    if status == "unchanged":
        report.unchanged(target.alias, f"{tool} login", why)
    else:
        report.changed(target.alias, f"{tool} login", why)


def ensure(
    inv: Inventory,
    target: Target,
    report: Report,
    plan: TrustPlan,
    facts: TrustFacts,
    user: str,
    password: str,
    local_user: str = "",
) -> None:
    """Log every runtime on the host in as ``user`` (Docker for ``local_user`` if given,
    else for root); say where, or why nothing is stored."""
    names = {runtime.name for runtime in plan.runtimes}
    if "Docker" in names:
        log_in(inv, target, report, "docker", user, password, local_user)
    if facts.login_tool:
        log_in(inv, target, report, facts.login_tool, user, password)
    if "containerd" in names:
        report.skipped(
            target.alias,
            "containerd login",
            "containerd stores no credentials; Kubernetes pulls with a secret: "
            + kubernetes_secret(inv, user),
        )
