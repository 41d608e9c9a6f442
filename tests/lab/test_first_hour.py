"""A new operator's first hour on a real server (#21), on lab hosts treated as real ones."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from lab.settings import SSH_KEY
from tasks import pki, pki_secrets, signing, users
from tasks.inventory import ENV_VAR
from tests.lab.conftest import (
    DOMAIN,
    PASSPHRASE,
    PASSWORD,
    USER,
    Lab,
    fab,
    inventory_variant,
    invoke,
    must,
    sh,
)


def test_a_host_key_pasted_as_ssh_keyscan_prints_it_pins_the_host(registry: Lab) -> None:
    lab = registry
    port = lab.inventory.hosts["client1"].port
    scanned = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    assert scanned.startswith(f"[127.0.0.1]:{port} ssh-ed25519 ")

    def pin(data: dict[str, Any]) -> None:
        data["hosts"]["client1"]["host_key"] = scanned

    variant = inventory_variant(lab, "keyscan", pin)
    try:
        assert variant.inventory.hosts["client1"].host_key == scanned.split(" ", 1)[1]
        out = must(fab(variant, "-H", "client1", "trust-ca", "--dry-run"))
        assert "[client1] " in out and "failed" not in out
    finally:
        variant.inventory_path.unlink()


def secrets_on(lab: Lab, alias: str) -> str:
    """Files on the host's whole file system holding a line of the server key or of the
    token key, or the probe's password (what a deploy put there)."""
    inv = lab.inventory
    needles = [
        pki.paths(inv).server_key.read_text().splitlines()[1],
        signing.key_path(inv).read_text().splitlines()[1],
        users.probe_credential(inv)[0],
    ]
    grep = " ".join(f"-e '{needle}'" for needle in needles)
    return sh(
        lab.connect(alias),
        f"grep -rlF {grep} / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev "
        "2>/dev/null | sort || true",
    )


def test_undeploy_leaves_no_secret_on_the_host_unless_keep_config(registry: Lab) -> None:
    lab = registry
    assert "/etc/regkit/tls/server.key" in secrets_on(lab, "regbox")
    out = must(fab(lab, "-H", "regbox", "undeploy", "--keep-config"))
    assert "[regbox] config /etc/regkit: unchanged (kept (--keep-config))" in out
    kept = secrets_on(lab, "regbox")
    assert "/etc/regkit/tls/server.key" in kept and "/etc/regkit/probe-password" in kept
    try:
        out = must(fab(lab, "-H", "regbox", "undeploy"))
        assert "[regbox] config /etc/regkit: changed (removed: configuration and secrets" in out
        assert "[regbox] data /var/lib/regkit/registry: unchanged (kept (--purge-data" in out
        assert secrets_on(lab, "regbox") == ""
        assert sh(lab.connect("regbox"), "docker image ls -q '*/regkit/probe'") == ""
    finally:
        must(fab(lab, "-H", "regbox", "deploy"))


def test_untrust_ca_takes_the_login_away_too(registry: Lab) -> None:
    lab = registry
    client1 = lab.connect("client1")
    configs = "/root/.docker/config.json /home/*/.docker/config.json"
    out = must(fab(lab, "-H", "client1", "trust-ca", "--login", USER, "--password-stdin",
                   stdin=PASSWORD + "\n"))  # fmt: skip
    assert f"({USER} at {DOMAIN}, in root's /root/.docker/config.json)" in out
    out = must(fab(lab, "-H", "client1", "trust-ca", "--login", USER, "--login-user", "admin",
                   "--password-stdin", stdin=PASSWORD + "\n"))  # fmt: skip
    assert "in admin's /home/admin/.docker/config.json" in out
    owner = sh(client1, "stat -c %U /home/admin/.docker/config.json")
    assert owner == "admin"
    assert sh(client1, f"grep -lF {DOMAIN} {configs} 2>/dev/null || true").split() == [
        "/root/.docker/config.json",
        "/home/admin/.docker/config.json",
    ]
    try:
        out = must(fab(lab, "-H", "client1", "untrust-ca"))
        assert "[client1] docker login: changed (removed /root/.docker/config.json)" in out
        assert "[client1] docker login: changed (removed /home/admin/.docker/config.json)" in out
        assert "restarting the Docker daemon" in out
        assert sh(client1, f"grep -lF {DOMAIN} {configs} 2>/dev/null || true") == ""
    finally:
        must(fab(lab, "-H", "client1", "trust-ca"))


def test_status_says_not_deployed_and_fails_for_a_host_that_does_not_serve(
    registry: Lab,
) -> None:
    lab = registry
    regbox = lab.connect("regbox")
    try:
        must(fab(lab, "-H", "regbox", "undeploy"))
        out = must(fab(lab, "-H", "regbox", "status"))
        assert "[regbox] status: skipped (not deployed: no regkit container on this host" in out
        assert "answered 000" not in out
        must(fab(lab, "-H", "regbox", "deploy"))
        sh(regbox, "docker stop regkit-registry >/dev/null")
        failing = fab(lab, "-H", "regbox", "status")
        assert failing.returncode != 0
        assert (
            "[regbox] status: failed (deployed, but not serving: regkit-registry not running"
            in (failing.stdout)
        )
        assert failing.stderr.strip() == "error: not serving: regbox (see the lines above)"
    finally:
        sh(regbox, "docker start regkit-registry >/dev/null 2>&1 || true")
        must(fab(lab, "-H", "regbox", "deploy"))


def test_no_next_step_on_a_redeploy_and_no_probe_in_the_catalog(registry: Lab) -> None:
    lab = registry
    again = must(fab(lab, "-H", "regbox", "deploy"))
    assert ": no changes" in again and "next:" not in again
    listed = must(fab(lab, "-H", "regbox", "catalog"))
    assert "regkit/probe" not in listed
    shown = must(fab(lab, "-H", "regbox", "catalog", "--json"))
    assert "regkit/probe" not in shown


def test_a_stale_hosts_line_for_the_domain_is_warned_about_and_loses(registry: Lab) -> None:
    lab = registry
    regbox = lab.connect("regbox")
    stale = f"203.0.113.7 {DOMAIN}"
    # /etc/hosts is a bind mount in a container: written in place, never renamed over.
    sh(regbox, f"cp /etc/hosts /etc/hosts.first-hour && "
       f"{{ echo '{stale}'; cat /etc/hosts.first-hour; }} > /etc/hosts")  # fmt: skip
    try:
        out = must(fab(lab, "-H", "regbox", "deploy"))
        assert f"[regbox] WARNING: /etc/hosts has another line for {DOMAIN} ('{stale}')" in out
        assert "[regbox] verify: ok" in out
        assert f"[regbox] name {DOMAIN}: changed (127.0.0.1 in /etc/hosts" in out
        first = sh(regbox, f"grep -n -w {DOMAIN} /etc/hosts | head -1")
        assert first.startswith(f"1:127.0.0.1 {DOMAIN} # regkit"), first
        # A lookup lists the first line's address first (and, with "multi on", the rest).
        assert sh(regbox, f"getent hosts {DOMAIN} | head -1 | cut -d' ' -f1") == "127.0.0.1"
    finally:
        sh(regbox, "cat /etc/hosts.first-hour > /etc/hosts && rm /etc/hosts.first-hour")


def test_the_real_server_path_from_inventory_init(registry: Lab, tmp_path: Path) -> None:
    """README's "A real server, step by step", on regbox under a name nothing resolves:
    inventory.init (a real ssh-keyscan), pki.init, users.add, deploy and its proof."""
    lab, domain = registry, "first-hour.lab.test"
    path = tmp_path / "inventory.yaml"
    port = lab.inventory.hosts["regbox"].port
    env = {**lab.env, ENV_VAR: str(path), pki_secrets.PASSPHRASE_ENV: PASSPHRASE}
    out = must(invoke("inventory.init", "--path", str(path), "--domain", domain,
                      "--host", f"admin@127.0.0.1:{port}", "--key-file", str(SSH_KEY), "--yes",
                      env=env))  # fmt: skip
    assert f"127.0.0.1 presented: [127.0.0.1]:{port} ssh-ed25519 " in out
    # The lab has no Docker Hub: its own images, as a real server's inventory pins others.
    data = yaml.safe_load(path.read_text())
    data["registry"]["images"] = lab.inventory.registry.images.model_dump()
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    must(invoke("pki.init", env=env))
    must(invoke("users.add", "--username", USER, "--password-stdin", env=env,
                stdin=PASSWORD + "\n"))  # fmt: skip
    regbox = lab.connect("regbox")
    assert sh(regbox, f"getent hosts {domain} || echo unknown") == "unknown"
    try:
        out = must(fab(lab, "-H", "regbox", "deploy", env=env))
        assert f"[regbox] name {domain}: changed (127.0.0.1 in /etc/hosts" in out
        assert f"[regbox] verify: ok (push/pull: {domain}/regkit/probe:deploy-regbox" in out
    finally:
        must(fab(lab, "-H", "regbox", "undeploy", env=env))
        must(fab(lab, "-H", "regbox", "deploy"))


def test_a_host_whose_apt_cannot_reach_its_source_deploys_without_apache2_utils(
    registry: Lab,
) -> None:
    lab = registry
    regbox = lab.connect("regbox")
    source = "http://203.0.113.1/debian"  # TEST-NET: nothing answers
    sh(regbox, "cp -a /etc/apt /etc/apt.first-hour && mv /var/lib/apt/lists /var/lib/apt/lists.fh"
       " && mkdir -p /var/lib/apt/lists/partial && rm -f /etc/apt/sources.list.d/*"
       f" && echo 'deb {source} bookworm main' > /etc/apt/sources.list"
       " && dpkg -r apache2-utils >/dev/null")  # fmt: skip
    try:
        skipped = (
            f"[regbox] apache2-utils: skipped (apt cannot reach its source "
            f"({source}/dists/bookworm/Release);"
        )
        dry = must(fab(lab, "-H", "regbox", "deploy", "--dry-run"))
        assert skipped in dry
        out = must(fab(lab, "-H", "regbox", "deploy"))
        assert skipped in out and "[regbox] verify: ok" in out
    finally:
        sh(regbox, "rm -rf /etc/apt /var/lib/apt/lists && mv /etc/apt.first-hour /etc/apt"
           " && mv /var/lib/apt/lists.fh /var/lib/apt/lists")  # fmt: skip
        must(fab(lab, "-H", "regbox", "deploy"))
