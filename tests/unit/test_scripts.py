"""Every shell script regkit runs on a host: rendered, then checked by ``sh -n`` and
shellcheck; and the deploy's facts script, run for real under ``sh`` against stub
commands, read back by the parser."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks import (
    accounts,
    backup,
    certificates,
    commands,
    health,
    logins,
    mirror_trust,
    pki,
    render,
    restore,
    scripts,
    users,
    wanted,
)
from tasks.inventory import Inventory
from tasks.inventory_mirror import Mirror
from tasks.inventory_storage import S3
from tasks.plans import accounts as accounts_planner
from tasks.plans import deploy as planner
from tasks.plans import deploy_facts, deploy_steps, runtimes
from tasks.plans import maintenance as maintenance_planner
from tasks.plans import migrate as migrate_planner
from tasks.plans import mirror_trust as mirror_planner
from tasks.plans import trust as trust_planner
from tasks.plans import undeploy as undeploy_planner
from tasks.remote import lock, upload
from tasks.remote.upload import Upload

BUCKET = S3(endpoint="https://s3.example.com", bucket="registry", root_directory="/team.registry")

SH_TEMPLATES = render.TEMPLATES / "sh"


def deploy_scripts(inv: Inventory) -> dict[str, str]:
    """The scripts a deploy runs: facts, each step's command, both proofs."""
    users.set_password(inv, "alice", "correct horse battery")
    users.ensure_probe_credential(inv)
    files = wanted.registry_files(inv)
    fresh = deploy_facts.parse_facts("os\tdebian\napt\tyes\ndocker\t20.10\ndisk_free_kb\t99999999")
    plan = planner.plan(inv, "regbox", files, fresh)
    steps = deploy_steps.steps(inv, plan)
    return {
        "deploy-facts": deploy_facts.facts_script(inv, files),
        "replace-container": next(s.command for s in steps if s.subject.startswith("container")),
        "verify": deploy_steps.verify_script(inv, "deploy-regbox", full=True),
        "verify (read back)": deploy_steps.verify_script(inv, "deploy-regbox", full=False),
        "self-name": next(s.command for s in steps if s.subject.startswith("name ")),
        "self-name (removed)": deploy_steps.self_name_script(""),
        **{f"deploy step: {s.subject}": s.command for s in steps if s.command},
        "undeploy-facts": undeploy_planner.facts_script(inv),
        "verify-mirror": deploy_steps.verify_mirror_script(with_mirror(inv)),
    }


def mirror_scripts(inv: Inventory) -> dict[str, str]:
    """The scripts trust-ca --mirror and untrust-ca run for the mirror."""
    rts = mirror_planner.runtimes_of(inv, True, True, True, "/etc/containerd/certs.d")
    return {
        "mirror-trust-facts": mirror_planner.facts_script(rts),
        "docker-mirrors": mirror_trust.reload_script(inv, want=True),
        "docker-mirrors (removed)": mirror_trust.reload_script(inv, want=False),
        "mirror-trust-verify": mirror_trust.verify_script(inv, rts[0]),
    }


def with_mirror(inv: Inventory) -> Inventory:
    """``inv`` with a mirror of Docker Hub (the section's defaults)."""
    return inv.model_copy(update={"registry": inv.registry.model_copy(update={"mirror": Mirror()})})


def trust_scripts(inv: Inventory) -> dict[str, str]:
    """The scripts trust-ca and untrust-ca run, for every flavor they know."""
    pems = [certificates.cert_pem(ca) for ca in pki.trusted_cas(inv)]
    bundle = b"".join(pems)
    facts = trust_planner.TrustFacts(systemd=True)
    out = {
        "trust-facts": trust_planner.facts_script(inv, pems),
        "trust-verify": trust_planner.verify_script(inv, bundle, trust_planner.BUNDLES[0]),
        "trust-verify (runtimes)": trust_planner.verify_script(
            inv,
            bundle,
            trust_planner.BUNDLES[0],
            (runtimes.containers_runtime(inv), runtimes.containerd_runtime(inv, "/x y")),
        ),
        "registry-login": logins.login_script(inv, "docker", "alice", "secret")[0],
        "registry-login (podman)": logins.login_script(inv, "podman", "alice", "secret")[0],
        "registry-login (as admin)": logins.login_script(inv, "docker", "a", "s", "admin")[0],
        "registry-logout": logins.logout_script(inv, "docker"),
        "registry-logout (podman, dry run)": logins.logout_script(inv, "podman", dry_run=True),
        "restart-containerd": trust_planner.restart_containerd_script(facts),
        "restart-docker": trust_planner.restart_script("debian", facts),
        "untrust: remove": commands.remove_files(("/a b", "/c"), ("/etc/docker/certs.d/x",)),
        **mirror_scripts(with_mirror(inv)),
    }
    for flavor in ("debian", "rhel", "boot2docker", "generic"):
        out[f"restart-docker ({flavor})"] = trust_planner.restart_script(flavor, facts)
        out[f"system store ({flavor})"] = trust_planner.store_script(inv, flavor, facts, bundle)
        out[f"system store removed ({flavor})"] = trust_planner.store_script(
            inv, flavor, facts, b""
        )
    out["boot2docker-store"] = out["system store (boot2docker)"]
    out["bundle-block"] = out["system store (generic)"]
    return out


def host_scripts(inv: Inventory) -> dict[str, str]:
    """The scripts of the other tasks and of the SSH layer: status, users, lock, upload."""
    files = [Upload("/etc/regkit/a b", b"x", 0o600), Upload("/etc/x", b"y", 0o640, 0, 4430)]
    held = lock.lock_script("deploy from me@here since now", "echo facts")
    return {
        "status": health.status_script(inv),
        "served-certificate": health.served_script(inv),
        "password-facts": accounts_planner.facts_script(),
        "maintenance-facts": maintenance_planner.facts_script(),
        "login-check": accounts.login_check_script(inv),
        "upload": upload.upload_script(files),
        "lock": held,
        "lock (nothing to read)": lock.lock_script("gc from me@here since now"),
        "lock-held": scripts.script(
            "lock-held", owner="me", owner_file="/run/o", then="", end_marker="end"
        ),
        "backup-links": backup.links_script(inv),
        "restore-facts": restore.facts_script(inv),
        "migrate-facts": migrate_planner.facts_script(inv),
        "migrate-copy": migrate_planner.copy_script(inv, BUCKET, "copy"),
        "migrate-copy (check)": migrate_planner.copy_script(inv, BUCKET, "check"),
    }


RENDERERS: dict[str, Callable[[Inventory], dict[str, str]]] = {
    "deploy": deploy_scripts,
    "trust": trust_scripts,
    "host": host_scripts,
}


@pytest.fixture
def rendered(pki_inv: Inventory) -> dict[str, str]:
    scripts: dict[str, str] = {}
    for render_all in RENDERERS.values():
        scripts.update(render_all(pki_inv))
    return scripts


def test_every_script_template_is_rendered_here(rendered: dict[str, str]) -> None:
    templates = {p.name.removesuffix(".sh.j2") for p in SH_TEMPLATES.glob("[!_]*.sh.j2")}
    assert templates, "no script templates found"
    assert templates <= set(rendered), f"not rendered by any test: {templates - set(rendered)}"


def test_every_rendered_script_parses(rendered: dict[str, str]) -> None:
    for name, script in rendered.items():
        result = subprocess.run(
            ["sh", "-n"], input=script, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{name}: {result.stderr}"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="needs Debian's shellcheck")
def test_every_rendered_script_passes_shellcheck(rendered: dict[str, str]) -> None:
    findings = []
    for name, script in rendered.items():
        result = subprocess.run(
            ["shellcheck", "--shell=sh", "--format=gcc", "-"],
            input=script,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            findings.append(f"{name}:\n{result.stdout}")
    assert not findings, "\n".join(findings)


# Stand-ins for what the facts script asks the host, each printing what the real
# command prints on a deployed Debian host.
STUBS = {
    "docker": r"""case "$*" in
  "version --format {{.Server.Version}}") echo 20.10.24+dfsg1 ;;
  "network inspect"*) printf 'regkit false <no value>\nregkit-backend true true\n' ;;
  "inspect --type container"*)
    echo '/regkit-registry|sha256:i1|0123456789abcdef|true'
    echo '/regkit-nginx|sha256:i2|<no value>|false' ;;
  "image inspect"*)
    echo '["registry:2.8.3"]["registry@sha256:aa"] sha256:i1' ;;
  *) exit 1 ;;
esac""",
    "ss": "echo 'LISTEN 0 4096 0.0.0.0:443 0.0.0.0:* users:((\"docker-proxy\",pid=7,fd=4))'",
    "iptables": "echo '-P FORWARD ACCEPT'",
    "dpkg-query": "printf 'install ok installed'",
}


def test_the_facts_script_run_for_real_reads_back_through_the_parser(
    pki_inv: Inventory, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        stub = bin_dir / name
        stub.write_text(f"#!/bin/sh\n{body}\n")
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    present, absent = tmp_path / "present.txt", tmp_path / "absent.txt"
    present.write_bytes(b"hello\n")
    present.chmod(0o640)
    files = [Upload(str(present), b"hello\n", 0o640), Upload(str(absent), b"x")]
    inv = pki_inv.model_copy(
        update={"registry": pki_inv.registry.model_copy(update={"data_dir": str(tmp_path)})}
    )
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = subprocess.run(
        ["sh"],
        input=deploy_facts.facts_script(inv, files),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    facts = deploy_facts.parse_facts(out)
    uid, gid = os.getuid(), os.getgid()
    assert facts.docker == "20.10.24+dfsg1"
    assert facts.apache2_utils
    assert facts.disk_free_kb > 0
    assert "docker-proxy" in facts.port_holder
    assert facts.forwarding.endswith(" -P FORWARD ACCEPT")
    assert facts.networks == {"regkit": "false <no value>", "regkit-backend": "true true"}
    assert facts.files == {str(present): f"{files[0].digest} 640 {uid} {gid}"}
    assert facts.containers["regkit-registry"] == deploy_facts.Container(
        "sha256:i1", "0123456789abcdef", True
    )
    assert facts.containers["regkit-nginx"].spec == ""
    assert not facts.containers["regkit-nginx"].running
    assert facts.images == {"registry:2.8.3": "sha256:i1"}
