"""How the lab's hosts are reached: the lab's login key, their keys, and the inventory.

The lab's key is authorized for each host's login user, each host's own key is read
from inside its container, and both go into ``lab/inventory.yaml`` for fab and invoke.
"""

from __future__ import annotations

import io
import shlex
import subprocess
import tarfile
from typing import Any

import yaml

from lab.engine import Engine
from lab.hosts import HostSpec
from lab.settings import DOMAIN, INVENTORY, LAB_DIR, SSH_KEY
from tasks.report import Report
from tasks.state import atomic_write, ensure_private_dir


def _userdata_tar(public_key: str) -> bytes:
    """A boot2docker userdata.tar holding .ssh/authorized_keys, as docker-machine makes it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ssh = tarfile.TarInfo(".ssh")
        ssh.type, ssh.mode = tarfile.DIRTYPE, 0o700
        tar.addfile(ssh)
        data = public_key.encode()
        keys = tarfile.TarInfo(".ssh/authorized_keys")
        keys.size, keys.mode = len(data), 0o600
        tar.addfile(keys, io.BytesIO(data))
    return buf.getvalue()


def authorize(engine: Engine, spec: HostSpec, public_key: str, report: Report) -> None:
    """Let the lab's key log in as the host's user (b2d: through userdata.tar, kept on disk)."""
    home = f"/home/{spec.user}"
    current = engine.run("exec", spec.container, "cat", f"{home}/.ssh/authorized_keys", check=False)
    if current.stdout.strip() == public_key.strip():
        report.unchanged(spec.alias, f"authorized_keys of {spec.user}", "holds the lab key")
        return
    if spec.flavor == "boot2docker":
        engine.exec(
            spec.container,
            "cat > /var/lib/boot2docker/userdata.tar",
            stdin=_userdata_tar(public_key),
        )
        engine.exec(spec.container, "/usr/local/sbin/b2d-userdata")
    else:
        user, ssh = shlex.quote(spec.user), shlex.quote(f"{home}/.ssh")
        script = (
            f"install -d -m 700 -o {user} -g {user} {ssh} && "
            f"cat > {ssh}/authorized_keys && "
            f"chown {user}:{user} {ssh}/authorized_keys && "
            f"chmod 600 {ssh}/authorized_keys"
        )
        engine.exec(spec.container, script, stdin=public_key)
    report.changed(spec.alias, f"authorized_keys of {spec.user}", "lab key installed")


def host_key(engine: Engine, spec: HostSpec) -> str:
    """The host's ed25519 public host key, read from inside the container (not over the network)."""
    path = "/var/lib/boot2docker/ssh" if spec.flavor == "boot2docker" else "/etc/ssh"
    line = engine.run("exec", spec.container, "cat", f"{path}/ssh_host_ed25519_key.pub").stdout
    return " ".join(line.split()[:2])


def ensure_ssh_key(report: Report) -> str:
    """The lab's login key (made once); return its public line."""
    if not SSH_KEY.exists():
        ensure_private_dir(SSH_KEY.parent)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "regkit-lab", "-f", str(SSH_KEY)],
            check=True,
        )
        report.changed("lab", "ssh key", f"made {SSH_KEY.relative_to(LAB_DIR.parent)}")
    else:
        report.unchanged("lab", "ssh key", f"{SSH_KEY.relative_to(LAB_DIR.parent)} exists")
    return SSH_KEY.with_suffix(".pub").read_text().strip()


def inventory_data(
    specs: tuple[HostSpec, ...],
    ports: dict[str, int],
    keys: dict[str, str],
    refs: dict[str, str],
    mirror: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The lab's inventory, valid under tasks.inventory's schema; with ``mirror``, the
    registry hosts run a mirror of it (the lab's hub)."""
    hosts = {
        spec.alias: {
            "hostname": "127.0.0.1",
            "port": ports[spec.alias],
            "user": spec.user,
            "key_file": str(SSH_KEY.relative_to(LAB_DIR)),
            "host_key": keys[spec.alias],
            "sudo": True,
            "role": spec.role,
            "flavor": spec.flavor,
        }
        for spec in specs
    }
    registry: dict[str, Any] = {"domain": DOMAIN, "images": refs}
    if mirror:
        registry["mirror"] = mirror
    return {
        "registry": registry,
        "state_dir": "state/regkit",
        "hosts": hosts,
    }


def write_inventory(data: dict[str, Any], report: Report) -> None:
    text = "# Written by `invoke lab.up`; removed by `invoke lab.down`.\n"
    text += yaml.safe_dump(data, sort_keys=False)
    if atomic_write(INVENTORY, text, mode=0o644):
        report.changed("lab", "inventory", f"wrote {INVENTORY.relative_to(LAB_DIR.parent)}")
    else:
        report.unchanged("lab", "inventory", f"{INVENTORY.relative_to(LAB_DIR.parent)} is current")
