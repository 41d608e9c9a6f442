"""Day two: garbage collection (read-only while it runs) and upgrade then rollback."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fabric
import pytest
import yaml

from tasks import deploy, layout, maintenance, users
from tasks.errors import RemoteError
from tasks.report import Report
from tests.lab.conftest import (
    CA_FILE,
    DOMAIN,
    Lab,
    Pushed,
    bearer,
    fab,
    login,
    must,
    pull_digest,
    push_image,
    sh,
    target,
)


def delete_manifest(lab: Lab, image: Pushed) -> None:
    """Delete as an admin (the deploy's own login): only admins may."""
    repo = image.ref.removeprefix(f"{DOMAIN}/").split(":")[0]
    c1 = lab.connect("client1")
    admin = users.probe_credential(lab.inventory)[0]
    code = sh(
        c1,
        f"curl -s -o /dev/null -w '%{{http_code}}' -K - --cacert {CA_FILE} "
        f"-X DELETE https://{DOMAIN}/v2/{repo}/manifests/{image.digest}",
        bearer(c1, users.PROBE_USER, admin, f"repository:{repo}:delete"),
    )
    assert code == "202"


def data_kib(lab: Lab) -> int:
    return int(sh(lab.connect("regbox"), f"du -sk {lab.inventory.registry.data_dir} | cut -f1"))


def test_pushes_are_refused_while_read_only_and_pulls_work(clients: Lab) -> None:
    kept = push_image(clients.connect("client1"))
    regbox = target(clients, "regbox")
    state = maintenance.read_state(regbox)
    maintenance.set_readonly(clients.inventory, regbox, state, True)
    try:
        c1 = clients.connect("client1")
        refused = c1.run(
            f"sudo -n sh -c 'd=$(mktemp -d) && head -c 4096 /dev/urandom > $d/f && "
            f'printf "FROM scratch\\nCOPY f /f\\n" > $d/Dockerfile && '
            f"docker build -q -t {DOMAIN}/team/ro:1 $d >/dev/null && "
            f"docker push {DOMAIN}/team/ro:1'",
            hide=True,
            warn=True,
            in_stream=False,
        )
        assert refused.failed
        assert "the registry is read-only while garbage is collected (fab gc)" in refused.stderr
        assert pull_digest(clients.connect("client2"), kept) == kept.digest
    finally:
        maintenance.set_readonly(clients.inventory, regbox, state, False)
    # nginx's gc flag is down again: the message is only for while gc runs.
    assert sh(clients.connect("regbox"), "ls -A /etc/regkit/maintenance") == ""
    assert push_image(clients.connect("client1")).digest.startswith("sha256:")


def test_gc_frees_a_deleted_tag_and_keeps_the_rest(clients: Lab) -> None:
    c1 = clients.connect("client1")
    kept, doomed = push_image(c1), push_image(c1)
    delete_manifest(clients, doomed)
    before = data_kib(clients)
    dry = must(fab(clients, "-H", "regbox", "gc", "--dry-run"))
    assert "[regbox] gc: unchanged (dry run only)" in dry
    assert data_kib(clients) == before
    out = must(fab(clients, "-H", "regbox", "gc"))
    assert "[regbox] gc: changed (" in out and "registry writable again" in out
    assert data_kib(clients) <= before - 1024  # the deleted tag's 1 MiB layer is gone
    c2 = clients.connect("client2")
    assert pull_digest(c2, kept) == kept.digest
    gone = c2.run(f"sudo -n docker pull {doomed.ref}", hide=True, warn=True, in_stream=False)
    assert gone.failed
    assert push_image(c1).digest.startswith("sha256:")


def test_upgrade_then_rollback_keeps_images_and_users(clients: Lab) -> None:
    kept = push_image(clients.connect("client1"))
    regbox = clients.connect("regbox")
    current = clients.inventory.registry.images.registry
    upgraded = current + "-next"
    sh(regbox, f"docker tag {current} {upgraded}")
    data = yaml.safe_load(clients.inventory_path.read_text())
    data["registry"]["images"]["registry"] = upgraded
    newer = clients.inventory_path.with_name("inventory-upgrade.yaml")
    newer.write_text(yaml.safe_dump(data))
    env = {"REGISTRY_INVENTORY": str(newer)}
    try:
        up = fab(clients, "-H", "regbox", "deploy", env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert (
            "[regbox] container regkit-registry: changed (recreated: its configuration changed)"
            in up.stdout
        )
        assert f"'{upgraded}'" not in up.stdout
        record = json.loads(sh(regbox, f"cat {layout.DEPLOYED}"))
        assert record["registry"] == upgraded and record["previous"]["registry"] == current
        assert pull_digest(clients.connect("client2"), kept) == kept.digest
        login(clients.connect("client2"))

        back = fab(clients, "-H", "regbox", "rollback", env=env)
        assert back.returncode == 0, back.stdout + back.stderr
        assert (
            f"[regbox] container regkit-registry: changed (back to {current} with config "
            in back.stdout
        )
        assert "the inventory still names" in back.stdout
        assert sh(regbox, "docker inspect --format '{{.Config.Image}}' regkit-registry") == current
        assert pull_digest(clients.connect("client2"), kept) == kept.digest
        login(clients.connect("client2"))
    finally:
        newer.unlink()
    again = must(fab(clients, "-H", "regbox", "deploy"))
    assert "[regbox] verify: ok" in again and "failed" not in again


def registry_config_in_use(conn: fabric.Connection) -> str:
    return sh(
        conn, "docker inspect --format '{{index .Config.Labels \"regkit.config\"}}' regkit-registry"
    )


def test_a_config_the_registry_rejects_fails_the_deploy_and_rollback_restores_the_last(
    clients: Lab, templates: Path
) -> None:
    """Issue #14: configs are staged by digest, so a registry config that fails at start
    leaves the running registry's config in place (through a restart too), and rollback
    returns to the deploy before with the config it ran."""
    kept = push_image(clients.connect("client1"))
    regbox, c2 = clients.connect("regbox"), clients.connect("client2")
    config = templates / "config.yml.j2"
    good = config.read_text()
    before = registry_config_in_use(regbox)

    config.write_text(good.replace("level: info", "level: info\n  # variant A"))
    deploy.deploy_host(clients.inventory, target(clients, "regbox"), Report(io.StringIO()), False)
    variant_a = registry_config_in_use(regbox)
    assert variant_a != before

    config.write_text(good.replace("level: info", "level: not-a-level"))
    out = io.StringIO()
    with pytest.raises(RemoteError, match="starting regkit-registry failed") as failed:
        deploy.deploy_host(clients.inventory, target(clients, "regbox"), Report(out), False)
    assert "the previous regkit-registry was restored" in str(failed.value)
    assert registry_config_in_use(regbox) == variant_a
    sh(regbox, "docker restart regkit-registry >/dev/null")
    assert sh(regbox, "sleep 2; docker inspect --format '{{.State.Running}}' regkit-registry") == (
        "true"
    )
    assert pull_digest(c2, kept) == kept.digest

    back = io.StringIO()
    maintenance.rollback_host(clients.inventory, target(clients, "regbox"), Report(back), False)
    assert "rolling back to the deploy before the last one" in back.getvalue()
    assert registry_config_in_use(regbox) == before
    assert pull_digest(c2, kept) == kept.digest
    record = json.loads(sh(regbox, f"cat {layout.DEPLOYED}"))
    assert (record["config"], record["previous"]["config"]) == (before, variant_a)
