"""Faults (issue #9): a connection killed mid-deploy, a daemon restart mid-push, a full disk.

Each test breaks something for real on the lab's hosts, then checks that what was
pushed still pulls with the same digest, and that the next run puts things right.
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import threading
import uuid
from pathlib import Path

import fabric
import pytest

from tasks import deploy, render
from tasks.errors import RemoteError
from tasks.remote.lock import host_lock
from tasks.report import Report
from tasks.wanted import nginx_tag, registry_files
from tests.lab.conftest import (
    CA_FILE,
    DOMAIN,
    PASSWORD,
    USER,
    Lab,
    Pushed,
    bearer,
    fab,
    lock_state,
    login,
    pull_digest,
    push_image,
    sh,
    target,
    trust_by_certs_d,
)


@pytest.fixture(scope="module")
def image(registry: Lab) -> Pushed:
    """An image pushed from client1, which client2 may pull (trust and login on both)."""
    for alias in ("client1", "client2"):
        trust_by_certs_d(registry, registry.connect(alias))
        login(registry.connect(alias))
    return push_image(registry.connect("client1"))


def deploy_in_process(lab: Lab) -> str:
    """One deploy to regbox as ``fab deploy`` does it (lock included), on its own connection."""
    t = target(lab, "regbox")
    out = io.StringIO()
    try:
        with host_lock(t, "deploy"):
            deploy.deploy_host(lab.inventory, t, Report(stream=out), dry_run=False)
    finally:
        t.conn.close()
    return out.getvalue()


def fingerprint(conn: fabric.Connection) -> str:
    """What a deploy leaves on a host: every file (content, mode, owner) and both containers."""
    return sh(
        conn,
        "cd /etc/regkit && find . -type f | sort | while read -r f; do "
        'echo "$(sha256sum < "$f" | cut -c1-16) $(stat -c \'%a %u %g\' "$f") $f"; done; '
        "docker inspect --format '{{.Name}} {{.Config.Image}} {{json .Config.Labels}}' "
        "regkit-registry regkit-nginx",
    )


def containers(conn: fabric.Connection) -> str:
    return sh(conn, "docker inspect --format '{{.Id}} {{.State.StartedAt}}' regkit-nginx")


# Run on regbox: drop the SSH connection that runs a process matching $1 (the
# connection's "sshd: user@notty" process is one of its ancestors), once it shows up.
DROP_CONNECTION = r"""
until pid=$(pgrep -o -f "$1"); do sleep 0.02; done
sleep "$2"
p=$pid
while [ "$p" -gt 1 ]; do
  case "$(tr '\0' ' ' < /proc/$p/cmdline)" in
    "sshd: "*@notty*) kill -KILL "$p"; exit 0;;
  esac
  p=$(cut -d' ' -f4 "/proc/$p/stat")
done
"""

# Put on regbox's PATH (before /bin) to break the upload's tar stream: it drops the
# SSH connection that runs it, and passes on only the first 700 bytes, as if the
# rest never arrived.
BROKEN_TAR = r"""#!/bin/sh
p=$$
while [ "$p" -gt 1 ]; do
  case "$(tr '\0' ' ' < /proc/$p/cmdline)" in
    "sshd: "*@notty*) kill -KILL "$p"; break;;
  esac
  p=$(cut -d' ' -f4 "/proc/$p/stat")
done
head -c 700 | /bin/tar "$@"
"""


@pytest.fixture
def dockerfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The proxy's Dockerfile template, in a copy of templates/ that deploys render from."""
    copy = tmp_path / "templates"
    shutil.copytree(render.TEMPLATES, copy)
    monkeypatch.setattr(render, "TEMPLATES", copy)
    return copy / "Dockerfile.j2"


@pytest.mark.parametrize(("where", "step"), [("upload", "uploading"), ("image build", "building")])
def test_connection_killed_mid_deploy_then_next_deploy_converges(
    registry: Lab, image: Pushed, dockerfile: Path, where: str, step: str
) -> None:
    regbox = registry.connect("regbox")
    original = dockerfile.read_text()
    # A change whose image build takes a few seconds, so there is a build to interrupt.
    changed = original + f"RUN sleep 4 && echo {uuid.uuid4().hex} > /etc/regkit-change\n"

    # The state an uninterrupted deploy of the change reaches, then back to before it.
    dockerfile.write_text(changed)
    deploy_in_process(registry)
    wanted = fingerprint(regbox)
    new_tag = nginx_tag(registry_files(registry.inventory))
    dockerfile.write_text(original)
    deploy_in_process(registry)
    before, running = fingerprint(regbox), containers(regbox)
    sh(regbox, f"docker rmi {new_tag} >/dev/null")

    dockerfile.write_text(changed)
    if where == "upload":
        sh(regbox, "cat > /usr/local/sbin/tar && chmod 755 /usr/local/sbin/tar", BROKEN_TAR)
    else:
        sh(
            regbox,
            f"nohup sh -c {shlex.quote(DROP_CONNECTION)} drop '[d]ocker build -t' 1 "
            ">/dev/null 2>&1 &",
        )
    try:
        with pytest.raises(
            RemoteError, match=f"the SSH connection was lost during {step} "
        ) as lost:
            deploy_in_process(registry)
    finally:
        sh(regbox, "rm -f /usr/local/sbin/tar; pkill -f '[u]ntil pid=' || true")
    assert "run the task again" in str(lost.value)

    # The host still serves what ran before; nothing is half-placed or left behind.
    assert containers(regbox) == running
    assert lock_state(regbox) == "free"
    assert sh(regbox, "ls -d /run/regkit-upload.* 2>/dev/null || echo none") == "none"
    if where == "upload":
        assert fingerprint(regbox) == before
    assert pull_digest(registry.connect("client2"), image) == image.digest

    out = deploy_in_process(registry)
    assert "[regbox] container regkit-nginx: changed" in out
    assert fingerprint(regbox) == wanted
    assert pull_digest(registry.connect("client2"), image) == image.digest
    dockerfile.write_text(original)
    deploy_in_process(registry)


def build_random_image(conn: fabric.Connection, repo: str, mib: int) -> str:
    """A one-layer image of ``mib`` MiB of random data on ``conn``; returns its ref."""
    ref = f"{DOMAIN}/{repo}:{uuid.uuid4().hex[:8]}"
    sh(
        conn,
        f"d=$(mktemp -d) && head -c {mib}M /dev/urandom > $d/blob && "
        "printf 'FROM scratch\\nCOPY blob /blob\\n' > $d/Dockerfile && "
        f"docker build -q -t {ref} $d >/dev/null && rm -rf $d",
    )
    return ref


def pushed_digest(output: str) -> str:
    return next(w for w in output.split() if w.startswith("sha256:"))


def served_blobs_match(conn: fabric.Connection, ref: str) -> list[str]:
    """Fetch every blob of ``ref``'s manifest through the proxy; return those whose
    content does not hash to their digest (an empty list when none is corrupt)."""
    name, tag = ref.removeprefix(f"{DOMAIN}/").split(":")
    auth = bearer(conn, USER, PASSWORD, f"repository:{name}:pull")
    accept = "application/vnd.docker.distribution.manifest.v2+json"
    manifest = json.loads(
        sh(
            conn,
            f"curl -sSf -K - --cacert {CA_FILE} -H 'Accept: {accept}' https://{DOMAIN}/v2/{name}/manifests/{tag}",
            auth,
        )
    )
    digests = [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]
    bad = []
    for digest in digests:
        got = sh(
            conn,
            f"curl -sSfL -K - --cacert {CA_FILE} https://{DOMAIN}/v2/{name}/blobs/{digest} "
            "| sha256sum | cut -c1-64",
            auth,
        )
        if f"sha256:{got}" != digest:
            bad.append(digest)
    return bad


def wait_for_proxy(conn: fabric.Connection) -> None:
    sh(
        conn,
        "for i in $(seq 60); do "
        "[ \"$(docker inspect --format '{{.State.Running}}' regkit-nginx 2>/dev/null)\" = true ] "
        "&& [ \"$(docker inspect --format '{{.State.Running}}' regkit-registry)\" = true ] "
        "&& break; sleep 1; done",
    )


def test_daemon_restart_during_a_large_push(registry: Lab, image: Pushed) -> None:
    c1, regbox = registry.connect("client1"), registry.connect("regbox")
    ref = build_random_image(c1, "team/big", 256)
    uploads = f"{registry.inventory.registry.data_dir}/docker/registry/v2/repositories/team/big"
    first: dict[str, object] = {}
    pusher = registry.connect("client1")
    push = threading.Thread(
        target=lambda: first.update(
            result=pusher.run(f"sudo -n docker push {ref}", hide=True, warn=True, in_stream=False)
        )
    )
    push.start()
    # Restart Docker on regbox once the registry has received part of the big layer
    # (sh fails the test if that never happens within a minute).
    sh(
        regbox,
        f"for i in $(seq 600); do [ -n \"$(find {uploads} -path '*_uploads*' -name data "
        '-size +32M 2>/dev/null)" ] && { service docker restart >/dev/null 2>&1; exit 0; }; '
        "sleep 0.1; done; exit 1",
    )
    mid_push = push.is_alive()
    push.join(timeout=600)
    wait_for_proxy(regbox)
    interrupted = first["result"]
    # The restart landed while the push ran: it failed (or, had Docker's retries
    # outlasted the restart, completed).
    assert mid_push or interrupted.failed  # type: ignore[attr-defined]
    assert interrupted.failed or "digest: sha256:" in interrupted.stdout  # type: ignore[attr-defined]

    again = sh(c1, f"docker push {ref}")
    digest = pushed_digest(again)
    c2 = registry.connect("client2")
    assert pull_digest(c2, Pushed(ref, digest)) == digest
    assert served_blobs_match(c2, ref) == []
    assert pull_digest(c2, image) == image.digest


def test_full_disk_fails_pushes_keeps_pulls_and_recovers(registry: Lab, image: Pushed) -> None:
    regbox, c1 = registry.connect("regbox"), registry.connect("client1")
    data = registry.inventory.registry.data_dir
    aside = f"{data}.full-test"
    assert fab(registry, "-H", "regbox", "undeploy").returncode == 0
    try:
        # The registry's data moves onto its own file system (a tmpfs). It is shrunk
        # after the deploy, whose preflight wants 1 GiB free, to 64 MiB over its use.
        sh(
            regbox,
            f"mv {data} {aside} && mkdir -p {data} && "
            f"mount -t tmpfs -o size=2g regkit-full {data} && cp -a {aside}/. {data}/",
        )
        assert fab(registry, "-H", "regbox", "deploy").returncode == 0
        sh(regbox, f"mount -o remount,size=$(( $(du -sm {data} | cut -f1) + 64 ))m {data}")
        refused = fab(registry, "-H", "regbox", "deploy")
        assert refused.returncode == 1
        assert "free at least 1 GiB first" in refused.stdout
        small = push_image(c1)
        filler = f"{data}/filler"
        sh(regbox, f"head -c 1G /dev/zero > {filler} 2>/dev/null; true")

        status = fab(registry, "-H", "regbox", "status")
        assert "[regbox] WARNING: the registry's disk is full" in status.stdout, status.stdout
        big = build_random_image(c1, "team/full", 8)
        failed = c1.run(f"sudo -n docker push {big}", hide=True, warn=True, in_stream=False)
        # Docker shows any 5xx as a bare status and drops its body: the cause is in the
        # registry's log, and `fab status` (above) says what to do.
        assert failed.failed
        assert "500 Internal Server Error" in failed.stderr
        assert "no space left on device" in sh(
            regbox, "docker logs regkit-registry 2>&1 | tail -50"
        )
        for pushed in (image, small):
            assert pull_digest(registry.connect("client2"), pushed) == pushed.digest

        sh(regbox, f"rm -f {filler}")
        assert pushed_digest(sh(c1, f"docker push {big}"))
        assert served_blobs_match(registry.connect("client2"), big) == []
    finally:
        fab(registry, "-H", "regbox", "undeploy")
        sh(
            regbox,
            f"if [ -d {aside} ]; then mountpoint -q {data} && umount {data}; "
            f"rm -rf {data} && mv {aside} {data}; fi",
        )
        assert fab(registry, "-H", "regbox", "deploy").returncode == 0
    assert pull_digest(registry.connect("client2"), image) == image.digest
