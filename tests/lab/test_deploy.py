"""`fab -H regbox deploy` against the lab's real hosts: deploy, prove, redeploy, break, recover.

The tests in this module run in order and share one deployment.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
from pathlib import Path
from shlex import quote

import fabric
import pytest

from tasks import deploy, pki, users
from tasks.errors import RemoteError
from tasks.report import Report
from tests.lab.conftest import (
    DOMAIN,
    PASSPHRASE,
    PASSWORD,
    REPO,
    Lab,
    Pushed,
    fab,
    lock_state,
    login,
    make_local_state,
    must,
    pull_digest,
    push_image,
    sh,
    target,
    trust_by_certs_d,
    watch_processes,
)


def containers(conn: fabric.Connection) -> dict[str, str]:
    """Container name -> "id started-at" on a host."""
    out = sh(
        conn,
        "for c in regkit-registry regkit-nginx; do "
        "docker inspect --format '{{.Name}} {{.Id}} {{.State.StartedAt}}' $c; done",
    )
    return {line.split()[0].lstrip("/"): " ".join(line.split()[1:]) for line in out.splitlines()}


@pytest.fixture(scope="module")
def deployed(lab: Lab) -> subprocess.CompletedProcess[str]:
    """A CA, a user and a first deploy to regbox, from scratch."""
    make_local_state(lab)
    # From scratch even when the lab is kept between runs (REGKIT_LAB_KEEP=1).
    must(fab(lab, "-H", "regbox", "undeploy", "--purge-data", "--yes"))
    return fab(lab, "-H", "regbox", "deploy")


@pytest.fixture(scope="module")
def pushed(lab: Lab, deployed: subprocess.CompletedProcess[str]) -> Pushed:
    """An image pushed from client1 through https://registry.lab.test."""
    c1 = lab.connect("client1")
    trust_by_certs_d(lab, c1)
    login(c1)
    return push_image(c1)


def test_first_deploy_builds_everything_and_proves_it(
    deployed: subprocess.CompletedProcess[str],
) -> None:
    out = deployed.stdout
    assert deployed.returncode == 0, out + deployed.stderr
    for line in [
        "[regbox] preflight: ok (debian, docker",
        "[regbox] file /etc/regkit/tls/server.key: changed (new)",
        "[regbox] container regkit-token: changed (created)",
        "[regbox] container regkit-registry: changed (created)",
        "[regbox] nginx -t: ok",
        "[regbox] container regkit-nginx: changed (created)",
        f"[regbox] verify: ok (push/pull: {DOMAIN}/regkit/probe:deploy-regbox sha256:",
        f"registry: https://{DOMAIN}",
        "CA SHA-256 fingerprint: ",
    ]:
        assert line in out, line
    assert PASSWORD not in out + deployed.stderr


def test_push_from_client1_pull_on_client2(lab: Lab, pushed: Pushed) -> None:
    c2 = lab.connect("client2")
    trust_by_certs_d(lab, c2)
    login(c2)
    assert pull_digest(c2, pushed) == pushed.digest


def test_files_on_the_host_are_root_owned_and_private(lab: Lab, deployed: object) -> None:
    out = sh(
        lab.connect("regbox"),
        "stat -c '%n %a %U %g' /etc/regkit/tls/server.key "
        "/etc/regkit/auth/htpasswd /etc/regkit/probe-password /etc/regkit/registry/*/config.yml",
    )
    lines = out.splitlines()
    assert lines[:3] == [
        "/etc/regkit/tls/server.key 600 root 0",
        "/etc/regkit/auth/htpasswd 640 root 4430",
        "/etc/regkit/probe-password 600 root 0",
    ]
    # The registry's config and its read-only variant, each in a folder named after it.
    assert len(lines) == 5
    assert all(
        re.fullmatch(r"/etc/regkit/registry/[0-9a-f]{16}/config.yml 600 root 0", line)
        for line in lines[3:]
    )


def test_second_deploy_changes_nothing(
    lab: Lab, pushed: Pushed, deployed: subprocess.CompletedProcess[str]
) -> None:
    regbox = lab.connect("regbox")
    before = containers(regbox)
    images = sh(regbox, "docker image ls -q regkit-nginx | sort")
    again = fab(lab, "-H", "regbox", "deploy")
    assert again.returncode == 0, again.stdout + again.stderr
    assert ": changed" not in again.stdout
    assert "no changes" in again.stdout
    assert "[regbox] files: unchanged (all 22 match" in again.stdout
    # Nothing changed, so the proof reads back the probe the first deploy pushed.
    probe = deployed.stdout.split("probe:deploy-regbox sha256:")[1].split()[0].rstrip(")")
    read_back = f"verify: ok (read back: {DOMAIN}/regkit/probe:deploy-regbox manifest, "
    assert f"{read_back}sha256:{probe} " in again.stdout
    assert containers(regbox) == before
    assert sh(regbox, "docker image ls -q regkit-nginx | sort") == images


def test_dry_run_shows_a_diff_and_changes_nothing(
    lab: Lab, pushed: Pushed, templates: Path
) -> None:
    conf = templates / "nginx.conf.j2"
    conf.write_text(conf.read_text() + "# dry-run marker\n")
    regbox = lab.connect("regbox")
    before = sh(regbox, "sha256sum /etc/regkit/nginx/nginx.conf")
    out = io.StringIO()
    deploy.deploy_host(lab.inventory, target(lab, "regbox"), Report(stream=out), dry_run=True)
    text = out.getvalue()
    assert (
        "[regbox] file /etc/regkit/nginx/nginx.conf: changed (content or mode differs (dry run))"
        in text
    )
    assert "--- regbox:/etc/regkit/nginx/nginx.conf" in text
    assert "+# dry-run marker" in text
    assert sh(regbox, "sha256sum /etc/regkit/nginx/nginx.conf") == before


def test_template_change_recreates_only_nginx(lab: Lab, pushed: Pushed, templates: Path) -> None:
    site = templates / "registry.conf.j2"
    site.write_text(site.read_text() + "# a harmless change\n")
    regbox = lab.connect("regbox")
    before = containers(regbox)
    out = io.StringIO()
    deploy.deploy_host(lab.inventory, target(lab, "regbox"), Report(stream=out), dry_run=False)
    after = containers(regbox)
    assert after["regkit-registry"] == before["regkit-registry"]
    assert after["regkit-nginx"] != before["regkit-nginx"]
    assert "[regbox] container regkit-nginx: changed" in out.getvalue()
    assert pull_digest(lab.connect("client2"), pushed) == pushed.digest


def test_dry_run_and_real_run_make_the_same_plan(lab: Lab, pushed: Pushed, templates: Path) -> None:
    """The dry run and the run after it read the same facts, make the same plan (the
    same value, not only the same lines) and report the same changes."""
    conf = templates / "nginx.conf.j2"
    conf.write_text(conf.read_text() + "# same-plan marker\n")
    runs = []
    for dry_run in (True, False):
        out = io.StringIO()
        plan = deploy.deploy_host(
            lab.inventory, target(lab, "regbox"), Report(stream=out), dry_run=dry_run
        )
        changed = [
            re.sub(r" (\(dry run\)|in [0-9.]+ s)\)$", ")", line)
            for line in out.getvalue().splitlines()
            if ": changed (" in line
        ]
        runs.append((plan, changed))
    (dry, dry_lines), (real, real_lines) = runs
    assert dry == real and dry.digest == real.digest
    assert dry.build and dry.nginx.why
    assert dry_lines == real_lines
    assert (
        "[regbox] file /etc/regkit/nginx/nginx.conf: changed (content or mode differs"
        in (dry_lines[0])
    )


def test_fab_dry_run_then_deploy_print_the_same_plan(lab: Lab, pushed: Pushed) -> None:
    """As a user runs them: the dry run reads facts without the lock, the deploy reads
    them with it; a new user makes the same one-file plan in both."""
    env = {**lab.env, "REGISTRY_CA_PASSPHRASE": PASSPHRASE}
    add = ["users.add", "--username", "dry-run-user", "--password-stdin"]
    must(subprocess.run([sys.executable, "-m", "invoke", *add], cwd=REPO, env=env,
                        input="dry-run-user-password\n", capture_output=True, text=True,
                        check=False))  # fmt: skip
    try:
        dry = must(fab(lab, "-H", "regbox", "deploy", "--dry-run"))
        real = must(fab(lab, "-H", "regbox", "deploy"))
    finally:
        users.remove(lab.inventory, "dry-run-user")
        must(fab(lab, "-H", "regbox", "deploy"))
    digests = [re.search(r"plan ([0-9a-f]{12}): ", out).group(1) for out in (dry, real)]
    assert digests[0] == digests[1]
    changed = "[regbox] file /etc/regkit/auth/htpasswd: changed (content or mode differs"
    assert changed + " (dry run))" in dry and changed + ")" in real
    assert "would change" in dry and ": applied" in real


def test_broken_template_fails_at_nginx_t_and_proxy_keeps_serving(
    lab: Lab, pushed: Pushed, templates: Path
) -> None:
    site = templates / "registry.conf.j2"
    site.write_text(
        site.read_text().replace("client_max_body_size 0;", "client_max_body_size zero;")
    )
    regbox = lab.connect("regbox")
    before = containers(regbox)
    with pytest.raises(RemoteError, match=r"nginx -t failed .* nothing running was changed") as err:
        deploy.deploy_host(
            lab.inventory, target(lab, "regbox"), Report(stream=io.StringIO()), False
        )
    assert '"client_max_body_size" directive invalid value' in str(err.value)
    assert containers(regbox) == before
    assert pull_digest(lab.connect("client2"), pushed) == pushed.digest


def test_fixed_template_converges_and_no_secret_is_in_argv(lab: Lab, pushed: Pushed) -> None:
    probe_password = users.probe_credential(lab.inventory)[0]
    with watch_processes(lab, "regbox") as seen:
        again = fab(lab, "-H", "regbox", "deploy")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[regbox] verify: ok (push/pull:" in again.stdout
    assert "docker login" in seen["remote"] and "fab" in seen["local"]
    for secret in (probe_password, PASSWORD, PASSPHRASE):
        assert secret not in seen["remote"] and secret not in seen["local"]
        assert secret not in again.stdout + again.stderr


def test_a_client_is_not_deployed_to_unless_forced(lab: Lab) -> None:
    out = fab(lab, "-H", "client1", "deploy")
    assert out.returncode == 2
    assert "hosts.client1: its role is 'client', and deploy acts on registry hosts" in out.stderr
    assert sh(lab.connect("client1"), "ls /etc/regkit 2>/dev/null || echo absent") == "absent"


def test_preflight_stops_before_any_change(lab: Lab, pushed: Pushed) -> None:
    c1 = lab.connect("client1")
    sh(c1, "service docker stop >/dev/null 2>&1; true")
    try:
        # --force: client1 is a client; the deploy is made to reach its preflight.
        out = fab(lab, "-H", "client1", "deploy", "--force")
    finally:
        sh(
            c1,
            "service docker start >/dev/null 2>&1; for i in $(seq 30); do "
            "docker info >/dev/null 2>&1 && break; sleep 1; done",
        )
    assert out.returncode == 1
    assert "[client1] deploy: failed (no Docker engine answers (docker version); " in out.stdout
    assert sh(c1, "ls /etc/regkit 2>/dev/null || echo absent") == "absent"
    assert lock_state(c1) == "free"


def test_two_deploys_at_once_never_interleave(lab: Lab, pushed: Pushed) -> None:
    results: list[subprocess.CompletedProcess[str]] = []
    runs = [
        threading.Thread(target=lambda: results.append(fab(lab, "-H", "regbox", "deploy")))
        for _ in range(2)
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=600)
    assert sorted(r.returncode for r in results) == [0, 1]
    refused = next(r for r in results if r.returncode == 1)
    assert "[regbox] deploy: failed (busy: deploy from " in refused.stdout
    assert "holds the lock; wait for it to finish" in refused.stdout
    assert lock_state(lab.connect("regbox")) == "free"
    assert pull_digest(lab.connect("client2"), pushed) == pushed.digest


def test_registry_port_is_not_reachable_from_a_client(lab: Lab, pushed: Pushed) -> None:
    c1 = lab.connect("client1")
    probe = "timeout 5 bash -c '</dev/tcp/{host}/{port}' && echo open || echo closed"
    assert sh(c1, probe.format(host=DOMAIN, port=443)) == "open"
    assert sh(c1, probe.format(host=DOMAIN, port=5000)) == "closed"


@pytest.mark.parametrize(
    ("flag", "accepted"), [("-tls1_1", False), ("-tls1_2", True), ("-tls1_3", True)]
)
def test_tls_versions_from_a_client(lab: Lab, pushed: Pushed, flag: str, accepted: bool) -> None:
    c1 = lab.connect("client1")
    result = c1.run(
        f"openssl s_client {flag} -cipher DEFAULT@SECLEVEL=0 -connect {DOMAIN}:443 "
        f"-servername {DOMAIN} -CAfile /etc/docker/certs.d/{DOMAIN}/ca.crt </dev/null",
        hide=True,
        warn=True,
        in_stream=False,
    )
    assert (result.ok and "Verify return code: 0 (ok)" in result.stdout) == accepted, result.stderr


def test_data_survives_container_and_daemon_restarts(lab: Lab, pushed: Pushed) -> None:
    regbox, c2 = lab.connect("regbox"), lab.connect("client2")
    sh(regbox, "docker restart regkit-registry regkit-nginx >/dev/null")
    assert pull_digest(c2, pushed) == pushed.digest
    sh(
        regbox,
        "service docker restart >/dev/null 2>&1; for i in $(seq 60); do "
        "[ \"$(docker inspect --format '{{.State.Running}}' regkit-nginx 2>/dev/null)\" = true ] "
        "&& break; sleep 1; done",
    )
    assert pull_digest(c2, pushed) == pushed.digest


def test_status_reports_the_registry(lab: Lab, pushed: Pushed) -> None:
    out = fab(lab, "-H", "regbox", "status")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[regbox] regkit-registry: running" in out.stdout
    assert "[regbox] regkit-nginx: running" in out.stdout
    assert "[regbox] regkit-token: running" in out.stdout
    assert "[regbox] health: /_ping answered 200" in out.stdout
    assert "[regbox] served certificate: serial " in out.stdout
    assert "repositories" in out.stdout and "catalog: 0 repositories" not in out.stdout
    assert "[regbox] users: alice" in out.stdout
    assert "differs" not in out.stdout


def test_undeploy_keeps_data_and_redeploy_serves_it(lab: Lab, pushed: Pushed) -> None:
    out = fab(lab, "-H", "regbox", "undeploy")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[regbox] container regkit-registry: changed (removed)" in out.stdout
    assert "kept (--purge-data deletes it)" in out.stdout
    assert "[regbox] name registry.lab.test: changed (removed from /etc/hosts)" in out.stdout
    regbox = lab.connect("regbox")
    assert sh(regbox, "docker ps -aq --filter name=regkit") == ""
    assert sh(regbox, "grep -c regkit /etc/hosts || true") == "0"
    again = fab(lab, "-H", "regbox", "deploy")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[regbox] name registry.lab.test: changed (127.0.0.1 in /etc/hosts" in again.stdout
    line = "127.0.0.1 registry.lab.test # regkit: this host serves the registry itself"
    assert sh(regbox, "grep regkit /etc/hosts") == line
    assert pull_digest(lab.connect("client2"), pushed) == pushed.digest


def test_unknown_alias_is_one_clear_line(lab: Lab) -> None:
    out = fab(lab, "-H", "regbx", "deploy")
    assert out.returncode == 2
    known = ", ".join(sorted(lab.inventory.hosts))
    assert f"hosts.regbx: unknown host alias; known aliases: {known}" in out.stderr
    assert "Traceback" not in out.stderr


def test_no_secret_in_the_proxy_image(lab: Lab, pushed: Pushed) -> None:
    key_line = pki.paths(lab.inventory).server_key.read_text().splitlines()[1]
    hash_line = users.password_file(lab.inventory).read_text().split(":", 1)[1].strip()
    secret = lab.inventory.state_path / "http-secret"
    regbox = lab.connect("regbox")
    image = "$(docker inspect --format '{{.Config.Image}}' regkit-nginx)"
    needles = [key_line, hash_line, secret.read_text().strip()]

    def count(strings: list[str]) -> str:
        search = " ".join(f"-e {quote(n)}" for n in strings)
        layers = f"docker save {image} | tar -xO 2>/dev/null"
        return sh(regbox, f"{layers} | grep -a -c -F {search} || true")

    assert count(needles) == "0"
    # The same search finds what the image does hold: its nginx configuration.
    assert count(["client_max_body_size 0;"]) != "0"
    history = sh(regbox, f"docker history --no-trunc {image}")
    assert "htpasswd" not in history and "server.key" not in history
