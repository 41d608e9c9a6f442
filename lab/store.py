"""The lab's S3 service on the store host: its endpoint, and the credentials the lab hands out.

store runs Ceph's RADOS Gateway on port 7480 of every address it has. Its first boot
makes the S3 user ``registry`` and the bucket ``registry``; ``lab.up`` and
``lab.reboot store`` read that user's keys back from inside the container (over
``docker exec``, never in argv) and write them, with the endpoint by store's address
on the lab network, to ``lab/state/s3.json`` (0600). Registries run nested inside
lab hosts, where no lab name resolves, so the endpoint is an IP URL.
"""

from __future__ import annotations

import json

from lab.engine import Engine
from lab.settings import LAB_DIR, NETWORK, STATE_DIR, LabError
from tasks.report import Report
from tasks.state import atomic_write, ensure_private_dir

S3_STATE = STATE_DIR / "s3.json"
S3_PORT = 7480
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
        "region": S3_REGION,
        "bucket": S3_BUCKET,
        "access_key": keys[0]["access_key"],
        "secret_key": keys[0]["secret_key"],
    }


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
    where = S3_STATE.relative_to(LAB_DIR.parent)
    if atomic_write(S3_STATE, json.dumps(document, indent=2) + "\n", mode=0o600):
        report.changed("store", "s3", f"wrote {where}: {document['endpoint']}, bucket registry")
    else:
        report.unchanged("store", "s3", f"{where} is current: {document['endpoint']}")
