"""``fab migrate-storage --to s3``: a registry's data from its host's disk into the bucket.

The inventory names the goal (``registry.storage.driver: s3``); the registry host
still runs on its disk. The move: read every tag and its digest through the API,
make the registry read-only (pulls work), verify every blob's sha256 and copy the
tree into the bucket from the host (the filesystem and S3 layouts are the same tree
under the root directory), then deploy every registry host on S3 (a roll, each
proven) and read every tag back through each of them: each must have the digest
it had. A corrupt blob is named and nothing switches; a failure before the deploy
leaves the registry writable on its disk. The data on the disk stays until
``--delete-source``, on a later run, once every file of it is in the bucket.
"""

from __future__ import annotations

from invoke import Collection, Context

from tasks import catalog, deploy, inventory, scripts, storage
from tasks.cli import task
from tasks.errors import InventoryError, RegkitError, RemoteError
from tasks.facts import parse_values
from tasks.inventory import Inventory
from tasks.inventory_storage import S3
from tasks.layout import CONFIG_LABEL, PROBE_REPO, REGISTRY, REGISTRY_CONFIGS, S3_CA_FILE
from tasks.maintenance import read_state, set_readonly
from tasks.remote.fanout import each_host, hosts_for
from tasks.remote.lock import host_lock
from tasks.remote.target import Target, open_target
from tasks.remote.upload import Upload
from tasks.report import Report, plural

# Where the S3 keys wait for curl on the host while the copy runs (a tmpfs, 0600).
CURL_CONFIG = "/run/regkit-migrate.curl"
# SigV4 signs the payload's hash: this is the empty body's, for HEAD requests.
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

Tags = dict[str, str]  # "repository:tag" -> digest


def bucket_url(s3: S3) -> str:
    """The URL of the registry's tree in the bucket (path style, as the registry uses)."""
    root = s3.root_directory.strip("/")
    return f"{s3.endpoint}/{s3.bucket}{'/' + root if root else ''}/docker/registry/v2"


def curl_config(s3: S3, keys: storage.S3Keys) -> bytes:
    """curl's config for the bucket: the keys and SigV4 (a 0600 file, never argv), and
    the service's private CA, if it has one."""
    ca = f'cacert = "{S3_CA_FILE}"\n' if s3.ca_file else ""
    return (
        f'user = "{keys.access_key}:{keys.secret_key}"\naws-sigv4 = "aws:amz:{s3.region}:s3"\n{ca}'
    ).encode()


def copy_script(inv: Inventory, s3: S3, mode: str) -> str:
    """``copy``: verify and upload the tree; ``check``: every file is in the bucket."""
    return scripts.script(
        "migrate-copy",
        mode=mode,
        data_dir=inv.registry.data_dir,
        base=bucket_url(s3),
        config=CURL_CONFIG,
        empty_sha256=EMPTY_SHA256,
    )


def facts_script(inv: Inventory) -> str:
    """Where the running registry keeps its data (its staged config says), and how much
    is on the disk."""
    return scripts.script(
        "migrate-facts",
        registry=REGISTRY,
        label_format=f'{{{{index .Config.Labels "{CONFIG_LABEL}"}}}}',
        configs=REGISTRY_CONFIGS,
        data_dir=inv.registry.data_dir,
    )


def bucket(inv: Inventory) -> S3:
    """The bucket the inventory names: where the data goes."""
    s3 = inv.registry.storage.s3
    if s3 is None:
        raise InventoryError(
            f"{inv.source}: registry.storage.driver is filesystem; set driver: s3 and its "
            "s3: settings (where the data goes), store the keys with 'invoke "
            "storage.set-credentials', then run this again"
        )
    return s3


def on_s3(values: dict[str, str]) -> bool:
    return values.get("driver") == "s3"


def read_tags(inv: Inventory, target: Target) -> Tags:
    """Every tag and its digest, read through ``target``'s own proxy; but the deploy's
    probe, which each host's deploy pushes anew."""
    with catalog.api_session(inv, target) as api:
        tags = catalog.read_catalog(api)
    return {f"{t.repository}:{t.tag}": t.digest for t in tags if t.repository != PROBE_REPO}


def differences(before: Tags, after: Tags) -> list[str]:
    """The tags that are missing or point elsewhere after the move (pure; unit-tested)."""
    out = []
    for name, digest in sorted(before.items()):
        now = after.get(name)
        if now != digest:
            out.append(f"{name} ({'missing' if now is None else now[:19]}, was {digest[:19]})")
    return out


def with_keys(
    inv: Inventory, target: Target, keys: storage.S3Keys, script: str, what: str, report: Report
) -> None:
    """Run ``script`` with curl's config for the bucket on the host (removed after; the
    service's private CA, if any, stays where deploy puts it), its progress lines shown."""
    alias = target.alias
    uploads = [Upload(CURL_CONFIG, curl_config(bucket(inv), keys), 0o600)]
    ca = storage.s3_ca(inv)
    if ca:
        uploads.append(Upload(S3_CA_FILE, ca))
    target.upload(uploads)
    try:
        target.check(script, what, stream=lambda line: report.info(f"[{alias}]   {line}"))
    finally:
        target.check(f"rm -f {CURL_CONFIG}", "removing the S3 keys' curl config")


def copy(inv: Inventory, target: Target, s3: S3, keys: storage.S3Keys, report: Report) -> None:
    """Verify and copy the host's tree into the bucket, the registry read-only meanwhile;
    on failure it is writable on its disk again and the error says what failed."""
    alias = target.alias
    state = read_state(target)
    report.info(f"[{alias}] registry read-only while its data is copied: pulls work")
    set_readonly(inv, target, state, True)
    try:
        with_keys(
            inv, target, keys, copy_script(inv, s3, "copy"), "copying into the bucket", report
        )
    except RegkitError as exc:
        set_readonly(inv, target, state, False)
        raise RemoteError(
            f"{exc}; nothing was switched: {alias} is writable again, on its disk"
        ) from None


def migrate_host(c: Context, inv: Inventory, target: Target, report: Report, dry_run: bool) -> None:
    """Move ``target``'s data into the bucket, deploy every registry host on it, and
    prove every tag through each."""
    s3 = bucket(inv)
    alias = target.alias
    values = parse_values(target.check(facts_script(inv), "reading the host").stdout)
    if on_s3(values):
        kept = values.get("bytes", "")
        report.unchanged(alias, "storage", f"already on bucket {s3.bucket}")
        if kept:
            report.info(
                f"[{alias}] its data from before stays in {inv.registry.data_dir} ({kept}); "
                "'fab migrate-storage --to s3 --delete-source' removes it"
            )
        return
    if not values.get("files"):
        raise RemoteError(
            f"{alias}: no registry data under {inv.registry.data_dir}; nothing to move: "
            "'fab deploy' puts the registry on the bucket"
        )
    before = read_tags(inv, target)
    where = f"{s3.endpoint}/{s3.bucket}{s3.root_directory.rstrip('/')}"
    plan = (
        f"{values['files']} files ({values.get('bytes', '?')}), {plural(len(before), 'tag')}, "
        f"from {inv.registry.data_dir} to {where}"
    )
    if dry_run:
        report.changed(alias, "storage", f"would copy {plan}, verifying each blob (dry run)")
        return
    keys = storage.read_keys(inv)
    with host_lock(target, "migrate-storage"):
        copy(inv, target, s3, keys, report)
    report.changed(alias, "storage", f"copied {plan}, every blob verified")
    hosts = inv.with_role("registry")
    deploy.deploy_all(c, inv, hosts, report)
    for other in hosts:
        tags = read_tags(inv, target if other == alias else open_target(inv, other, c))
        missing = differences(before, tags)
        if missing:
            raise RemoteError(
                f"{other}: after the move, these tags differ: {', '.join(missing)}; the data "
                f"on {alias}'s disk is untouched: set registry.storage back and deploy"
            )
        report.ok(other, "tags", f"{plural(len(before), 'tag')}, each with the digest it had")


def delete_source_host(inv: Inventory, target: Target, report: Report, dry_run: bool) -> None:
    """Delete the data on the disk, once the registry runs on the bucket and it holds
    every file of it."""
    s3 = bucket(inv)
    alias = target.alias
    data = inv.registry.data_dir
    values = parse_values(target.check(facts_script(inv), "reading the host").stdout)
    if not on_s3(values):
        raise RemoteError(
            f"{alias}: the registry still runs on its disk; move it first: "
            "'fab migrate-storage --to s3'"
        )
    if not values.get("files"):
        report.unchanged(alias, f"data {data}", "nothing left on the disk")
        return
    if dry_run:
        report.changed(alias, f"data {data}", f"would delete {values['bytes']} (dry run)")
        return
    keys = storage.read_keys(inv)
    with host_lock(target, "migrate-storage"):
        with_keys(inv, target, keys, copy_script(inv, s3, "check"), "checking the bucket", report)
        target.check(f"rm -rf {data}/docker", f"deleting {data}/docker")
    report.changed(alias, f"data {data}", f"deleted {values['bytes']}: the bucket holds all of it")


@task(
    name="migrate-storage",
    role="registry",
    help={
        "to": "Where the data goes: s3 (the inventory's registry.storage.s3).",
        "delete-source": "On a later run: delete the data on the disk, once the bucket "
        "holds every file of it.",
        "dry-run": "Say what would be copied (or deleted); change nothing.",
        "force": "Act on -H hosts whose inventory role is not registry.",
    },
)
def migrate_storage(
    c: Context,
    to: str = "",
    delete_source: bool = False,
    dry_run: bool = False,
    force: bool = False,
) -> None:
    """Move a registry's images from its host's disk into the S3 bucket, then switch."""
    inv = inventory.load()
    if to != "s3":
        raise RegkitError("say where the data goes: --to s3 (the one move there is)")
    bucket(inv)
    report = Report()
    aliases = hosts_for(c, inv, "registry", "migrate-storage", force)

    def work(target: Target) -> None:
        if delete_source:
            delete_source_host(inv, target, report, dry_run)
        else:
            migrate_host(c, inv, target, report, dry_run)

    each_host(c, inv, aliases[:1], report, "migrate-storage", work)


ns = Collection("migrate", migrate_storage)
