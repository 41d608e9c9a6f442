"""Lab fixtures: the lab comes up once per test run and goes down at its end.

Every test in this folder is marked ``lab`` (``pytest -m "not lab"`` runs the unit
tests alone). ``REGKIT_LAB_KEEP=1`` keeps the lab running after the run, so the
next run starts in seconds; the test of ``lab.down`` is then skipped.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fabric
import pytest
import yaml
from invoke import Context
from playwright.sync_api import Browser, sync_playwright

from lab.engine import Engine
from lab.hosts import host_spec, remove_host
from lab.settings import INVENTORY, LAB_DIR, Settings
from lab.store import S3_STATE, keys_input, storage_settings
from lab.store import lab_ip as store_ip
from tasks import inventory as inventory_module
from tasks import pki, render
from tasks.inventory import ENV_VAR, Inventory
from tasks.layout import LOCK, LOCK_OWNER
from tasks.remote.connect import connect, open_connection
from tasks.remote.target import Target
from tasks.report import Report

HERE = Path(__file__).resolve().parent
REPO = LAB_DIR.parent
KEEP = os.environ.get("REGKIT_LAB_KEEP") == "1"
# Tests that must run after every other lab test (they take the lab down).
LAST = ("test_lab_down.py",)
# Fixtures that start optional hosts: tests using them run late.
LATE = ("all_hosts", "store")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything in tests/lab ``lab``, and run the lab.down tests last."""
    ours = [item for item in items if HERE in Path(item.path).parents]
    for item in ours:
        item.add_marker(pytest.mark.lab)
    last = [item for item in ours if Path(item.path).name in LAST]
    # Tests that start the optional hosts (node1, pod1, store) come just before those:
    # once started, those hosts stay (node1 and pod1 in the inventory, where every
    # default trust-ca reaches them).
    late = [i for i in ours if set(LATE) & set(getattr(i, "fixturenames", ())) and i not in last]
    items[:] = [item for item in items if item not in last + late] + late + last


def invoke(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``invoke ARGS`` from the repository as a user would; never raises."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO,
        env=env or dict(os.environ),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


def must(proc: subprocess.CompletedProcess[str]) -> str:
    """The output of a finished command, or a test failure showing all of it."""
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(proc.args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )
    return proc.stdout


@dataclass
class Lab:
    """The running lab: its inventory and how to reach its hosts."""

    inventory_path: Path
    inventory: Inventory
    env: dict[str, str] = field(default_factory=dict)

    def invoke(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``invoke ARGS`` with REGISTRY_INVENTORY set to the lab's inventory."""
        return invoke(*args, env=self.env)

    def connect(self, alias: str, inv: Inventory | None = None) -> fabric.Connection:
        """An open Fabric connection to ``alias``, host key pinned from the inventory."""
        ctx = Context(config=fabric.Config(overrides={"run": {"in_stream": False}}))
        return open_connection(connect(inv or self.inventory, alias, ctx))

    def reload(self) -> None:
        """Read the inventory again (after lab.up or lab.reboot rewrote it)."""
        self.inventory = inventory_module.load(self.inventory_path)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """Bring the lab up (fast when its images are cached); take it down at the end."""
    must(invoke("lab.up"))
    env = {**os.environ, ENV_VAR: str(INVENTORY)}
    yield Lab(INVENTORY, inventory_module.load(INVENTORY), env)
    if not KEEP:
        must(invoke("lab.down"))


def inventory_variant(lab: Lab, name: str, change: Callable[[dict[str, Any]], None]) -> Lab:
    """The lab with a copy of its inventory, changed by ``change``, beside it (so with the
    same state folder): ``lab/inventory-<name>.yaml``; the caller removes it."""
    data = yaml.safe_load(lab.inventory_path.read_text())
    change(data)
    path = lab.inventory_path.with_name(f"inventory-{name}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return Lab(path, inventory_module.load(path), {**lab.env, ENV_VAR: str(path)})


def s3_variant(lab: Lab, name: str, root: str, https: bool = False) -> Lab:
    """The lab with its registry on the lab's S3 bucket (under ``root``; with ``https``,
    through the gateway's https endpoint and its lab CA): an inventory variant, and the
    bucket's keys stored with ``invoke storage.set-credentials``."""

    def on_bucket(data: dict[str, Any]) -> None:
        data["registry"]["storage"] = storage_settings(root, https)

    variant = inventory_variant(lab, name, on_bucket)
    keys = keys_input()
    stored = subprocess.run(
        [sys.executable, "-m", "invoke", "storage.set-credentials"],
        cwd=REPO,
        env=variant.env,
        input=keys,
        capture_output=True,
        text=True,
        check=False,
    )
    assert keys.split()[1] not in must(stored)
    return variant


EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def bucket_config(payload: str = EMPTY_SHA256) -> str:
    """curl's config for the lab's bucket: the keys (fed on stdin, never in argv) and the
    signed payload hash (the empty body's, or UNSIGNED-PAYLOAD for an upload)."""
    s3 = json.loads(S3_STATE.read_text())
    return (
        f'user = "{s3["access_key"]}:{s3["secret_key"]}"\n'
        'aws-sigv4 = "aws:amz:us-east-1:s3"\n'
        f'header = "x-amz-content-sha256: {payload}"\n'
    )


def bucket_request(lab: Lab, method: str, key: str, upload: str = "") -> str:
    """``method`` on the object ``key`` of the lab's bucket, from regbox (``upload``: a
    file there to PUT); the HTTP status."""
    s3 = json.loads(S3_STATE.read_text())
    body = f"-T {shlex.quote(upload)} " if upload else ""
    url = f"{s3['endpoint']}/{s3['bucket']}/{key}"
    curl = f"curl -sS -K - -X {method} {body}-o /dev/null -w '%{{http_code}}' '{url}'"
    payload = "UNSIGNED-PAYLOAD" if upload else EMPTY_SHA256
    return sh(lab.connect("regbox"), curl, bucket_config(payload))


def bucket_objects(lab: Lab, prefix: str) -> dict[str, int]:
    """Key -> size of every object under ``prefix`` in the lab's bucket, listed through
    the gateway from regbox (the keys reach curl in a config on stdin, not in argv)."""
    s3 = json.loads(S3_STATE.read_text())
    config = bucket_config()
    objects: dict[str, int] = {}
    token = ""
    while True:
        # The gateway signs the query as sent: a "/" must travel as %2F.
        query = f"list-type=2&prefix={quote(prefix.lstrip('/'), safe='')}"
        if token:
            query = f"continuation-token={quote(token, safe='')}&{query}"
        listing = sh(
            lab.connect("regbox"),
            f"curl -sS -K - '{s3['endpoint']}/{s3['bucket']}?{query}'",
            config,
        )
        for part in listing.split("<Contents>")[1:]:
            key = part.split("<Key>")[1].split("</Key>")[0]
            objects[key] = int(part.split("<Size>")[1].split("</Size>")[0])
        if "<IsTruncated>true</IsTruncated>" not in listing:
            return objects
        token = listing.split("<NextContinuationToken>")[1].split("</NextContinuationToken>")[0]


@pytest.fixture(scope="session")
def all_hosts(lab: Lab) -> Lab:
    """The lab with its optional hosts too (node1: containerd, pod1: podman), as
    ``invoke lab.up --all`` starts them; later plain ``lab.up`` runs leave them."""
    must(lab.invoke("lab.up", "--all"))
    lab.reload()
    return lab


@pytest.fixture(scope="session")
def store(lab: Lab) -> Iterator[Lab]:
    """The lab with its scale-out hosts (store: Ceph's S3 gateway, credentials in
    lab/state/s3.json; regbox2, a second registry host), as ``invoke lab.up
    --scale-out`` starts them. regbox2 is removed at the end: a lab kept for the next
    run must not hold a second registry host that every default registry task reaches."""
    must(lab.invoke("lab.up", "--scale-out"))
    lab.reload()
    yield lab
    if KEEP:
        remove_host(Engine(Settings()), host_spec("regbox2"), Report(), "removed after the tests")
        must(lab.invoke("lab.up"))


# Shared by the tests of the remote tasks: one CA, one user, one registry.
FAB = str(Path(sys.executable).parent / "fab")
PASSPHRASE = "lab-test-passphrase"
USER, PASSWORD = "alice", "alice-lab-password-1"
DOMAIN = "registry.lab.test"
# Where trust_by_certs_d puts the CA on a client: Docker reads it, and so can curl.
CA_FILE = f"/etc/docker/certs.d/{DOMAIN}/ca.crt"


def fab(
    lab: Lab, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``fab ARGS`` against the lab, as a user would run it."""
    return subprocess.run(
        [FAB, *args],
        cwd=REPO,
        env={**lab.env, "REGISTRY_CA_PASSPHRASE": PASSPHRASE, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def run_root(
    conn: fabric.Connection, script: str, stdin: str | None = None
) -> tuple[int, str, str]:
    """Run ``script`` as root: (exit status, stdout, stderr), never raising.

    ``stdin`` goes down the SSH channel in one write: invoke forwards an in-memory
    stream a byte per 10 ms, so a manifest or a token would take seconds."""
    command = f"sudo -n sh -c {shlex.quote(script)}"
    if stdin is None:
        result = conn.run(command, hide=True, warn=True, in_stream=False)
        return result.exited, result.stdout, result.stderr
    channel = conn.client.get_transport().open_session()
    try:
        channel.exec_command(command)
        channel.sendall(stdin.encode())
        channel.shutdown_write()
        out = channel.makefile("rb").read().decode(errors="replace")
        err = channel.makefile_stderr("rb").read().decode(errors="replace")
        return channel.recv_exit_status(), out, err
    finally:
        channel.close()


def sh(conn: fabric.Connection, script: str, stdin: str | None = None) -> str:
    """Run ``script`` as root on a lab host; fail the test with its output if it fails."""
    status, out, err = run_root(conn, script, stdin)
    if status != 0:
        pytest.fail(f"{conn.host}:{conn.port}: {script!r} failed:\n{out}{err}")
    return out.strip()


def target(lab: Lab, alias: str) -> Target:
    """A regkit Target on ``alias``, to call task internals in process."""
    return Target(alias, lab.inventory.host(alias), lab.connect(alias))


def lock_state(conn: fabric.Connection) -> str:
    """``free`` when no task holds the host lock and no owner is recorded, else ``held``."""
    return sh(
        conn,
        f"[ ! -e {LOCK_OWNER} ] && flock -n {LOCK} true && echo free || echo held",
    )


@pytest.fixture
def templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of templates/ that in-process deploys render from, for this test only."""
    copy = tmp_path / "templates"
    shutil.copytree(render.TEMPLATES, copy)
    monkeypatch.setattr(render, "TEMPLATES", copy)
    return copy


def make_local_state(lab: Lab) -> None:
    """A fresh CA and the user alice for the lab's registry."""
    shutil.rmtree(lab.inventory.state_path, ignore_errors=True)
    env = {**lab.env, "REGISTRY_CA_PASSPHRASE": PASSPHRASE}
    must(invoke("pki.init", env=env))
    args = ["users.add", "--username", USER, "--password-stdin"]
    must(
        subprocess.run(
            [sys.executable, "-m", "invoke", *args],
            cwd=REPO,
            env=env,
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            check=False,
        )
    )


@pytest.fixture(scope="session")
def registry(lab: Lab) -> Lab:
    """The registry deployed on regbox, from local state the tests own (a `make demo`
    before the tests left its own CA and passphrase: they are replaced)."""
    make_local_state(lab)
    must(fab(lab, "-H", "regbox", "deploy"))
    return lab


@pytest.fixture(scope="module")
def clients(registry: Lab) -> Lab:
    """The deployed registry, with client1 and client2 trusting it and logged in as alice."""
    for alias in ("client1", "client2"):
        conn = registry.connect(alias)
        trust_by_certs_d(registry, conn)
        login(conn)
    return registry


def trust_by_certs_d(lab: Lab, conn: fabric.Connection) -> None:
    """The plain per-registry trust Docker reads without a restart (trust-ca does more)."""
    ca = pki.paths(lab.inventory).ca_cert.read_text()
    sh(
        conn,
        f"mkdir -p /etc/docker/certs.d/{DOMAIN} && cat > {CA_FILE}",
        ca,
    )


def wait_for_registry(conn: fabric.Connection, seconds: int = 90) -> None:
    """Wait until nginx, the token service and the registry all answer ``conn``.

    As after a reboot: the user's token is granted and ``/v2/`` asks for a token.
    Fails the test after ``seconds``.
    """
    token = f"https://{DOMAIN}/auth/token?service={DOMAIN}"
    sh(
        conn,
        f"read -r pw; for i in $(seq {seconds}); do "
        f'printf \'user = "%s:%s"\\n\' {USER} "$pw" '
        f"| curl -sf -o /dev/null --max-time 2 -K - --cacert {CA_FILE} '{token}' "
        f"&& [ \"$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 2 --cacert {CA_FILE} "
        f'https://{DOMAIN}/v2/)" = 401 ] && exit 0; sleep 1; done; '
        f"echo 'the registry did not answer within {seconds} s'; exit 1",
        PASSWORD + "\n",
    )


def login(conn: fabric.Connection) -> None:
    out = sh(conn, f"docker login -u {USER} --password-stdin {DOMAIN}", PASSWORD + "\n")
    assert "Login Succeeded" in out


def bearer(conn: fabric.Connection, user: str, password: str, *scopes: str) -> str:
    """A curl config line with a token for ``scopes`` (token auth), asked for on ``conn``
    with the login on stdin: feed it to ``curl -K -``."""
    query = "&".join([f"service={DOMAIN}", *(f"scope={s}" for s in scopes)])
    token = sh(
        conn,
        f"curl -sSf -K - --cacert {CA_FILE} 'https://{DOMAIN}/auth/token?{query}' "
        '| sed -n \'s/.*"token": *"\\([^"]*\\)".*/\\1/p\'',
        f'user = "{user}:{password}"\n',
    )
    assert token, f"no token for {user}"
    return f'header = "Authorization: Bearer {token}"\n'


@dataclass
class Pushed:
    ref: str
    digest: str


def push_image(conn: fabric.Connection, mib: int = 1, repo: str = "team/app") -> Pushed:
    """Build a unique image of ``mib`` MiB on ``conn`` and push it; return its ref and digest."""
    ref = f"{DOMAIN}/{repo}:{uuid.uuid4().hex[:8]}"
    out = sh(
        conn,
        f"d=$(mktemp -d) && head -c {mib}M /dev/urandom > $d/blob && "
        "printf 'FROM scratch\\nCOPY blob /blob\\n' > $d/Dockerfile && "
        f"docker build -q -t {ref} $d >/dev/null && docker push {ref} && rm -rf $d",
    )
    digest = next(w for w in out.split() if w.startswith("sha256:"))
    return Pushed(ref, digest)


def pull_digest(conn: fabric.Connection, image: Pushed) -> str:
    """Pull ``image`` afresh and return the digest the registry served."""
    return sh(
        conn,
        f"docker rmi -f {image.ref} >/dev/null 2>&1; docker pull -q {image.ref} >/dev/null && "
        f"docker inspect --format '{{{{index .RepoDigests 0}}}}' {image.ref}",
    ).split("@")[-1]


def _local_cmdlines() -> str:
    out = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            out.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return "\n".join(out)


@contextmanager
def watch_processes(lab: Lab, alias: str) -> Iterator[dict[str, str]]:
    """Sample every process's command line here and on ``alias`` while the block runs.

    Yields a dict that holds, afterwards, ``local`` and ``remote``: all that was seen.
    """
    stop = "/tmp/regkit-watch-stop"
    seen: dict[str, str] = {}
    local: list[str] = []
    done = threading.Event()
    loop = (
        f"rm -f {stop}; i=0; while [ ! -f {stop} ] && [ $i -lt 3000 ]; do "
        f"ps -eo args; sleep 0.02; i=$((i+1)); done; rm -f {stop}"
    )
    watcher = lab.connect(alias)
    remote = threading.Thread(target=lambda: seen.update(remote=sh(watcher, loop)))

    def sample_local() -> None:
        while not done.is_set():
            local.append(_local_cmdlines())
            time.sleep(0.02)

    here = threading.Thread(target=sample_local)
    remote.start()
    here.start()
    try:
        yield seen
    finally:
        done.set()
        sh(lab.connect(alias), f"touch {stop}")
        here.join()
        remote.join(timeout=120)
        seen["local"] = "\n".join(local)


def served(lab: Lab, field: str) -> str:
    """A field of the certificate regbox serves, read from client1 (``serial``, ``issuer``)."""
    return sh(
        lab.connect("client1"),
        f"openssl s_client -connect {DOMAIN}:443 -servername {DOMAIN} </dev/null 2>/dev/null "
        f"| openssl x509 -noout -{field}",
    )


@contextmanager
def pinned(conn: fabric.Connection, alias: str) -> Iterator[None]:
    """``registry.lab.test`` is ``alias``'s address on ``conn`` (its /etc/hosts) while the
    block runs: a client reaches that one registry host."""
    sh(conn, f"cp /etc/hosts /etc/hosts.lab && echo '{lab_ip(alias)} {DOMAIN}' >> /etc/hosts")
    try:
        yield
    finally:
        sh(conn, "cat /etc/hosts.lab > /etc/hosts && rm /etc/hosts.lab")


def lab_ip(alias: str = "regbox") -> str:
    """A lab host's address on the lab network (regbox's by default)."""
    return store_ip(Engine(Settings()), host_spec(alias).container)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless; registry.lab.test resolves to regbox on the lab network."""
    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--host-resolver-rules=MAP {DOMAIN} {lab_ip()}",
    ]
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path="/usr/bin/chromium", args=flags)
        yield launched
        launched.close()
