"""The lab's S3 service on the store host: its endpoint, and the credentials the lab hands out.

store runs Ceph's RADOS Gateway on port 7480 of every address it has, and https on
7443 with a certificate from a lab CA of its own (made at its first boot). Its first
boot makes the S3 user ``registry`` and the bucket ``registry``; ``lab.up`` and
``lab.reboot store`` read that user's keys back from inside the container (over
``docker exec``, never in argv) and write them, with the endpoints by store's address
on the lab network, to ``lab/state/s3.json`` (0600), and the CA to
``lab/state/s3-ca.crt``. Registries run nested inside
lab hosts, where no lab name resolves, so the endpoint is an IP URL.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from lab.engine import Engine
from lab.settings import INVENTORY, LAB_DIR, NETWORK, STATE_DIR, LabError
from tasks import inventory, storage
from tasks.report import Report
from tasks.state import atomic_write, ensure_private_dir

S3_STATE = STATE_DIR / "s3.json"
S3_CA = STATE_DIR / "s3-ca.crt"
S3_PORT = 7480
S3_TLS_PORT = 7443
S3_REGION = "us-east-1"
S3_BUCKET = "registry"
S3_USER = "registry"
# How lab.status asks store whether S3 answers on its lab address (as root, inside
# store): Ceph's version when it does, nothing when it does not.
S3_PROBE = (
    f'curl -fsS -o /dev/null --max-time 3 "http://$(hostname -i):{S3_PORT}/" '
    "&& ceph --version | cut -d' ' -f3"
)


def endpoint(ip: str) -> str:
    """The S3 endpoint URL of the gateway at ``ip``."""
    return f"http://{ip}:{S3_PORT}"


def s3_document(user_info: str, ip: str) -> dict[str, str]:
    """What lab/state/s3.json holds: the endpoint at ``ip`` and the keys of the S3 user,
    from the JSON of ``radosgw-admin user info``."""
    keys = [k for k in json.loads(user_info).get("keys", []) if k.get("user") == S3_USER]
    if not keys:
        raise LabError(f"store: the S3 user {S3_USER!r} has no keys")
    return {
        "endpoint": endpoint(ip),
        "https_endpoint": f"https://{ip}:{S3_TLS_PORT}",
        "region": S3_REGION,
        "bucket": S3_BUCKET,
        "access_key": keys[0]["access_key"],
        "secret_key": keys[0]["secret_key"],
    }


def storage_settings(root: str, https: bool = False) -> dict[str, object]:
    """The inventory's ``registry.storage`` for the lab's bucket, under ``root``; with
    ``https``, through the gateway's https endpoint and the lab CA that signed it."""
    s3 = json.loads(S3_STATE.read_text())
    where = {key: s3[key] for key in ("endpoint", "region", "bucket")}
    if https:
        where = {**where, "endpoint": s3["https_endpoint"], "ca_file": str(S3_CA)}
    return {"driver": "s3", "s3": {**where, "root_directory": root}}


def write_s3_inventory(path: Path, root: str, https: bool, report: Report) -> None:
    """``path``: the lab's inventory with the registry on store's bucket under ``root``;
    the bucket's keys stored in its local state, as storage.set-credentials does."""
    if not S3_STATE.exists():
        raise LabError(f"{S3_STATE} is missing: start store with `invoke lab.up --scale-out`")
    data = yaml.safe_load(INVENTORY.read_text())
    data["registry"]["storage"] = storage_settings(root, https)
    where = path.relative_to(LAB_DIR.parent) if path.is_relative_to(LAB_DIR.parent) else path
    text = yaml.safe_dump(data, sort_keys=False)
    if atomic_write(path, text, mode=0o644):
        report.changed("lab", "inventory", f"wrote {where}: the registry on bucket {S3_BUCKET}")
    else:
        report.unchanged("lab", "inventory", f"{where} is current")
    inv = inventory.load(path)
    if storage.write_keys(inv, storage.check_keys(*keys_input().split())):
        report.changed("lab", "S3 keys", f"stored in {storage.keys_path(inv)} (0600)")
    else:
        report.unchanged("lab", "S3 keys", "stored already")


def keys_input() -> str:
    """The bucket's keys as ``invoke storage.set-credentials`` reads them from stdin."""
    s3 = json.loads(S3_STATE.read_text())
    return f"{s3['access_key']}\n{s3['secret_key']}\n"


def lab_ip(engine: Engine, container: str) -> str:
    """The address of ``container`` on the lab network."""
    info = engine.inspect(container)
    address = info and info["NetworkSettings"]["Networks"].get(NETWORK, {}).get("IPAddress")
    if not address:
        raise LabError(f"{container} has no address on the network {NETWORK}")
    return str(address)


def write_s3_state(engine: Engine, container: str, report: Report) -> None:
    """Write lab/state/s3.json (0600) from the gateway in ``container``; say so only
    when it changed (a reboot may move store to another address)."""
    user_info = engine.exec(container, f"radosgw-admin user info --uid={S3_USER}")
    document = s3_document(user_info, lab_ip(engine, container))
    ensure_private_dir(STATE_DIR)
    atomic_write(S3_CA, engine.exec(container, "cat /var/lib/ceph/tls/ca.crt"), mode=0o644)
    where = S3_STATE.relative_to(LAB_DIR.parent)
    if atomic_write(S3_STATE, json.dumps(document, indent=2) + "\n", mode=0o600):
        report.changed("store", "s3", f"wrote {where}: {document['endpoint']}, bucket registry")
    else:
        report.unchanged("store", "s3", f"{where} is current: {document['endpoint']}")
