"""Every task that changes a host has a dry run that reads the host, says what would
change, and changes nothing there: undeploy, untrust-ca, trust-ca, rollback."""

from __future__ import annotations

import fabric

from tests.lab.conftest import CA_FILE, Lab, fab, must, sh

STORE = "/usr/local/share/ca-certificates/regkit-registry.lab.test.crt"


def state(conn: fabric.Connection) -> str:
    """What a dry run must leave as it was: containers (ID, start), networks, CA files,
    the deploy record, the Docker daemon's PID."""
    return sh(
        conn,
        "docker ps -a --no-trunc --format '{{.Names}} {{.ID}} {{.CreatedAt}} {{.State}}' | sort; "
        "docker network ls --format '{{.Name}}' | sort; "
        f"ls {CA_FILE} {STORE} /etc/regkit/deployed.json 2>/dev/null; "
        "cat /etc/regkit/deployed.json 2>/dev/null; pidof dockerd",
    )


def test_undeploy_dry_run_removes_nothing(registry: Lab) -> None:
    regbox = registry.connect("regbox")
    before = state(regbox)
    out = must(fab(registry, "-H", "regbox", "undeploy", "--purge-data", "--dry-run"))
    assert "[regbox] container regkit-registry: changed (removed (dry run))" in out
    assert "[regbox] data /var/lib/regkit/registry: changed (deleted (dry run))" in out
    assert "[regbox] config /etc/regkit: changed (removed (dry run): configuration and" in out
    assert state(regbox) == before


def test_untrust_and_trust_dry_runs_touch_no_file_and_no_daemon(registry: Lab) -> None:
    client1 = registry.connect("client1")
    must(fab(registry, "-H", "client1", "trust-ca"))
    trusted = state(client1)
    out = must(fab(registry, "-H", "client1", "untrust-ca", "--dry-run"))
    assert f"[client1] file {STORE}: changed (removed (dry run))" in out
    assert "[client1] docker daemon: changed (would restart" in out
    assert state(client1) == trusted

    must(fab(registry, "-H", "client1", "untrust-ca"))
    untrusted = state(client1)
    out = must(fab(registry, "-H", "client1", "trust-ca", "--dry-run"))
    assert f"[client1] file {STORE}: changed (new (dry run))" in out
    assert "[client1] system CA store (debian): changed (CA trusted (dry run))" in out
    assert state(client1) == untrusted
    must(fab(registry, "-H", "client1", "trust-ca"))


def test_rollback_dry_run_names_its_target_and_recreates_nothing(registry: Lab) -> None:
    regbox = registry.connect("regbox")
    before = state(regbox)
    out = fab(registry, "-H", "regbox", "rollback", "--dry-run")
    # The registry fixture deployed once or more: either a previous deploy to name, or
    # the one-line refusal; nothing on the host changes either way.
    assert (
        "[regbox] rolling back to " in out.stdout or "no previous deploy recorded" in out.stdout
    ), out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert state(regbox) == before
