"""What a registry host's facts say before the plan (pure): whether it can run the
registry at all, what to warn about, the package step, and the host's own line for
the registry's name in /etc/hosts.
"""

from __future__ import annotations

from tasks.errors import RemoteError
from tasks.inventory import Inventory
from tasks.layout import (
    BACKEND,
    HOSTS_FILE,
    MIN_FREE_KB,
    NGINX,
    REGISTRY,
    SELF_NAME_MARK,
)
from tasks.plans.deploy_facts import BACKEND_WANTED, DeployFacts


def preflight(inv: Inventory, alias: str, facts: DeployFacts) -> str:
    """Stop before any change when the host cannot run the registry; else a summary."""
    if not facts.docker:
        raise RemoteError(
            f"{alias}: no Docker engine answers (docker version); install Docker "
            "(Debian: apt-get install docker.io) and start it"
        )
    if facts.disk_free_kb < MIN_FREE_KB:
        raise RemoteError(
            f"{alias}: only {facts.disk_free_kb // 1024} MiB free under "
            f"{inv.registry.data_dir}; free at least 1 GiB first"
        )
    ours = NGINX in facts.containers
    if facts.port_holder and not ours and "docker-proxy" not in facts.port_holder:
        raise RemoteError(
            f"{alias}: port {inv.registry.port} is already in use "
            f"({facts.port_holder.split()[-1]}); stop that service or set registry.port"
        )
    backend = facts.networks.get(BACKEND, BACKEND_WANTED)
    if backend != BACKEND_WANTED:
        raise RemoteError(
            f"{alias}: the network {BACKEND} exists but is not internal without a host "
            f"address ({backend!r}); remove it ('docker network rm {BACKEND}' after "
            f"'docker rm -f {REGISTRY}': the data stays) and deploy again"
        )
    return (
        f"{facts.os}, docker {facts.docker}, {facts.disk_free_kb // 1024 // 1024} GiB free, "
        f"port {inv.registry.port} {'ours' if ours else 'free'}"
    )


def forwarding_warning(facts: DeployFacts) -> str:
    """A warning when the host routes other hosts' packets into container networks."""
    ip_forward, _, policy = facts.forwarding.partition(" ")
    if ip_forward != "1" or policy.strip() != "-P FORWARD ACCEPT":
        return ""
    return (
        "this host forwards packets from other hosts into its container networks "
        "(ip_forward on, iptables FORWARD policy ACCEPT): the registry is on an internal "
        "network no route reaches, but other containers here are open to any neighbour "
        "that routes to them; set the policy to DROP ('iptables -P FORWARD DROP')"
    )


def package_state(facts: DeployFacts) -> str:
    """What becomes of apache2-utils on this host (see DeployPlan.package)."""
    if facts.apache2_utils:
        return "installed"
    if not facts.apt:
        return "no apt"
    if facts.apt_source.startswith("no "):
        return f"unreachable {facts.apt_source[3:]}"
    return "install"


def other_name_warning(inv: Inventory, facts: DeployFacts) -> str:
    """A warning when another line of /etc/hosts names the registry's domain."""
    if not facts.other_name:
        return ""
    return (
        f"{HOSTS_FILE} has another line for {inv.registry.domain} ({facts.other_name!r}); "
        "regkit's own line comes first, so this host reaches its own proxy, but remove the "
        "other if it is stale"
    )


def self_name_change(inv: Inventory, facts: DeployFacts) -> str:
    """The host's own line to write ("" when it stands): when it is missing or differs,
    or when another line for the name comes before it (a lookup would find that one)."""
    line = self_name_line(inv)
    first_is_ours = facts.first_name in ("", line) or not facts.other_name
    return "" if facts.self_name == line and first_is_ours else line


def self_name_line(inv: Inventory) -> str:
    """The registry host's line in /etc/hosts: its registry's name is itself."""
    return f"127.0.0.1 {inv.registry.domain} {SELF_NAME_MARK}"
