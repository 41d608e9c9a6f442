"""Faults (issue #9): a connection killed mid-deploy, a daemon restart mid-push, a full disk.

Each test breaks something for real on the lab's hosts, then checks that what was
pushed still pulls with the same digest, and that the next run puts things right.
"""

from __future__ import annotations

import io
import shlex
import shutil
import uuid
from pathlib import Path

import fabric
import pytest

from tasks import deploy, render
from tasks.errors import RemoteError
from tasks.remote import Target, host_lock
from tasks.report import Report
from tests.lab.conftest import (
    Lab,
    Pushed,
    lock_state,
    login,
    pull_digest,
    push_image,
    sh,
    trust_by_certs_d,
)


@pytest.fixture(scope="module")
def image(registry: Lab) -> Pushed:
    for alias in ("client1", "client2"):
        trust_by_certs_d(registry, registry.connect(alias))
    c1 = registry.connect("client1")
    login(c1)
    return push_image(c1)


def deploy_in_process(lab: Lab) -> str:
    """One deploy to regbox as ``fab deploy`` does it (lock included), on its own connection."""
    t = Target("regbox", lab.inventory.host("regbox"), lab.connect("regbox"))
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
    new_tag = deploy.nginx_tag(deploy.wanted_files(registry.inventory))
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
