"""The lab's Docker Hub: ``hub``, a plain registry under a name of its own, for the mirror.

The lab has no internet, so the mirror (``registry.mirror``) caches this instead: the
lab's registry image run directly on the lab network as ``regkit-lab-hub`` (network
alias ``hub.lab.test``), TLS on :443 with a certificate from a lab-only CA
(``lab/state/hub-ca.crt``, which the mirror trusts through ``registry.mirror.ca_file``),
no login, like Docker Hub's anonymous pulls. The certificate names hub's address on
the lab network too: registries nested inside lab hosts resolve no lab name, so the
inventory's upstream is an IP URL. hub's address is Docker's choice at each start; a
certificate for an old one is made again, and hub restarted.

``lab.up --all`` (or ``--hub``) starts it and preloads ``library/alpine:lab`` and
``library/busybox:lab``: images that exist nowhere else, made here byte for byte the
same each time (one small layer each).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import ipaddress
import json
import ssl
import tarfile
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509

from lab.engine import Engine
from lab.images import image_ref, image_spec
from lab.settings import LABEL, NETWORK, PREFIX, STATE_DIR, LabError, Settings
from lab.store import lab_ip
from tasks import certificates, pki
from tasks.report import Report
from tasks.state import atomic_write, ensure_private_dir

CONTAINER = f"{PREFIX}-hub"
NAME = "hub.lab.test"
HUB_DIR = STATE_DIR / "hub"
HUB_CA = STATE_DIR / "hub-ca.crt"
MOUNT = "/etc/regkit-hub"
IMAGES = ("alpine", "busybox")
TAG = "lab"
CONFIG = f"""\
# The lab's Docker Hub (lab/hub.py): plain distribution, TLS, no login.
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :443
  tls:
    certificate: {MOUNT}/server.crt
    key: {MOUNT}/server.key
"""
# Waits for the certificate lab.up writes once hub has its address, then serves.
START = (
    f"while [ ! -s {MOUNT}/server.crt ]; do sleep 0.2; done; exec registry serve {MOUNT}/config.yml"
)
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def running(engine: Engine) -> bool:
    info = engine.inspect(CONTAINER)
    return bool(info and info["State"]["Running"])


def mirror_settings(engine: Engine) -> dict[str, str]:
    """The inventory's ``registry.mirror`` for hub: by its address on the lab network,
    trusted through the lab-only CA (relative to the inventory, as lab/ holds both)."""
    return {
        "upstream": f"https://{lab_ip(engine, CONTAINER)}",
        "ca_file": str(HUB_CA.relative_to(STATE_DIR.parent)),
    }


def describe(engine: Engine) -> str:
    """What ``lab.status`` says of hub: absent, stopped, or whether it answers."""
    info = engine.inspect(CONTAINER)
    if info is None:
        return "absent (optional: lab.up --hub or --all starts it)"
    if not info["State"]["Running"]:
        return "stopped"
    ip = lab_ip(engine, CONTAINER)
    try:
        context = ssl.create_default_context(cafile=str(HUB_CA))
        answers = request(ip, context, "GET", "/v2/").status == 200
    except (OSError, ssl.SSLError):
        answers = False
    return f"running, https://{ip} ({NAME}) {'answers' if answers else 'not answering'}"


def ensure_hub(engine: Engine, settings: Settings, report: Report) -> None:
    """Run hub with a certificate for its current address, and its images pushed."""
    ref = image_ref(image_spec("registry"), settings)
    info = engine.inspect(CONTAINER)
    if info and info["Config"]["Labels"].get(f"{LABEL}.image") != ref:
        engine.run("rm", "--force", CONTAINER)
        info = None
    ensure_private_dir(HUB_DIR)
    atomic_write(HUB_DIR / "config.yml", CONFIG, mode=0o644)
    if info is None:
        engine.run(
            "run", "--detach", "--name", CONTAINER, "--label", LABEL,
            "--label", f"{LABEL}.image={ref}", "--network", NETWORK,
            "--network-alias", NAME, "--volume", f"{HUB_DIR}:{MOUNT}:ro",
            "--entrypoint", "sh", ref, "-c", START,
        )  # fmt: skip
        why = "created"
    elif not info["State"]["Running"]:
        engine.run("start", CONTAINER)
        why = "was stopped: started"
    else:
        why = ""
    ip = lab_ip(engine, CONTAINER)
    if write_certificate(ip) and why != "created":
        engine.run("restart", CONTAINER)
        why = f"certificate made for its new address {ip}: restarted"
    context = ssl.create_default_context(cafile=str(HUB_CA))
    wait_serving(ip, context)
    pushed = [name for name in IMAGES if push_image(ip, context, name)]
    done = f", pushed {', '.join(f'library/{n}:{TAG}' for n in pushed)}" if pushed else ""
    if why or pushed:
        report.changed("hub", "registry", f"{why or 'running'} at https://{ip} ({NAME}){done}")
    else:
        report.unchanged("hub", "registry", f"running at https://{ip} ({NAME}), images present")


def push(engine: Engine, name: str, payload: bytes) -> str:
    """Push ``library/<name>:lab`` holding ``payload`` to the running hub (the benchmarks'
    images); return hub's address."""
    ip = lab_ip(engine, CONTAINER)
    context = ssl.create_default_context(cafile=str(HUB_CA))
    push_image(ip, context, name, lab_image(name, payload))
    return ip


def write_certificate(ip: str) -> bool:
    """hub's certificate for ``NAME`` and ``ip`` from the lab-only CA (made once); True
    when it was made now."""
    cert_file, key_file = HUB_DIR / "server.crt", HUB_DIR / "server.key"
    ca_key_file = HUB_DIR / "ca.key"
    if cert_file.exists():
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if ipaddress.ip_address(ip) in sans.get_values_for_type(x509.IPAddress):
            return False
    if not ca_key_file.exists():
        ca_key = certificates.new_key("ec-p256")
        ca = certificates.build_ca(ca_key, "regkit lab hub", NAME, 3650)
        atomic_write(ca_key_file, certificates.key_pem(ca_key), mode=0o600)
        atomic_write(HUB_CA, certificates.cert_pem(ca), mode=0o644)
    ca = x509.load_pem_x509_certificate(HUB_CA.read_bytes())
    ca_key = pki.read_key(ca_key_file)
    key = certificates.new_key("ec-p256")
    sans = certificates.subject_alt_names(NAME, [], [ip])
    cert = certificates.build_server_cert(ca, ca_key, key, sans, 397)
    atomic_write(key_file, certificates.key_pem(key), mode=0o600)
    atomic_write(cert_file, certificates.cert_pem(cert), mode=0o644)
    return True


def request(
    ip: str, context: ssl.SSLContext, method: str, path: str, body: bytes = b"", **headers: str
) -> http.client.HTTPResponse:
    """One request to hub, its answer read (``.headers``, ``.status``)."""
    connection = http.client.HTTPSConnection(ip, 443, context=context, timeout=30)
    try:
        connection.request(method, path, body=body or None, headers=headers)
        reply = connection.getresponse()
        reply.read()
        return reply
    finally:
        connection.close()


def wait_serving(ip: str, context: ssl.SSLContext, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if request(ip, context, "GET", "/v2/").status == 200:
                return
            problem = "not 200"
        except OSError as exc:
            problem = str(exc)
        if time.monotonic() > deadline:
            raise LabError(f"hub does not answer at https://{ip}/v2/: {problem}")
        time.sleep(0.3)


@dataclass(frozen=True)
class Image:
    """An image as blobs and a manifest: the same bytes every time."""

    layer: bytes
    config: bytes
    manifest: bytes


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def lab_image(name: str, payload: bytes = b"") -> Image:
    """``library/<name>:lab``: one layer holding ``/etc/regkit-lab-image`` (``payload``,
    or a line naming the image)."""
    content = payload or f"library/{name}:{TAG}, from the lab's hub\n".encode()
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as archive:
        entry = tarfile.TarInfo("etc/regkit-lab-image")
        entry.size, entry.mtime, entry.mode = len(content), 0, 0o644
        archive.addfile(entry, io.BytesIO(content))
    layer = gzip.compress(tar.getvalue(), compresslevel=1, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": {"Labels": {"org.regkit.lab.image": name}},
            "rootfs": {"type": "layers", "diff_ids": [digest(tar.getvalue())]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": digest(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer),
                    "digest": digest(layer),
                }
            ],
        },
        sort_keys=True,
    ).encode()
    return Image(layer, config, manifest)


def push_image(ip: str, context: ssl.SSLContext, name: str, image: Image | None = None) -> bool:
    """Push ``library/<name>:lab`` (``image``, or the small one of that name) to hub unless
    it is there; True when pushed."""
    path = f"/v2/library/{name}"
    image = image or lab_image(name)
    head = request(ip, context, "HEAD", f"{path}/manifests/{TAG}", Accept=MANIFEST)
    if head.headers.get("Docker-Content-Digest") == digest(image.manifest):
        return False
    for blob in (image.layer, image.config):
        location = request(ip, context, "POST", f"{path}/blobs/uploads/").headers["Location"]
        upload = urlsplit(location)
        sep = "&" if upload.query else "?"
        target = (
            f"{upload.path}{'?' + upload.query if upload.query else ''}{sep}digest={digest(blob)}"
        )
        stored = request(
            ip, context, "PUT", target, blob, **{"Content-Type": "application/octet-stream"}
        )
        if stored.status != 201:
            raise LabError(f"hub: uploading a blob of library/{name} answered {stored.status}")
    put = request(
        ip, context, "PUT", f"{path}/manifests/{TAG}", image.manifest, **{"Content-Type": MANIFEST}
    )
    if put.status != 201:
        raise LabError(f"hub: pushing library/{name}:{TAG} answered {put.status}")
    return True
