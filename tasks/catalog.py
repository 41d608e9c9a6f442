"""``fab -H regbox catalog``: what was pushed, read through the registry's v2 API.

Over an SSH tunnel to the host's HTTPS port, checked against the local CA, with the
deploy's own login (an admin) and token auth. The same calls as the browser page: the
catalog, each repository's tags, each tag's manifest and config blob. Whoever can push
writes those: a field of another type reads as absent, what is printed goes through
``printable``, and a repository without tags, or a tag gone while read, is skipped.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from invoke import Collection, Context
from invoke.exceptions import ThreadException

from tasks import inventory, pki, users
from tasks.cli import task
from tasks.errors import RegkitError, RemoteError
from tasks.inventory import Inventory, Registry
from tasks.layout import PROBE_REPO
from tasks.remote.fanout import each_host, hosts_for
from tasks.remote.target import Target
from tasks.report import Report, aligned, human_size, printable

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
IMAGE_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
MANIFEST_TYPES = ", ".join(INDEX_TYPES + IMAGE_TYPES)
# Config media types of container images; any other config (or an artifactType) makes
# the manifest an artifact (oras, helm, ...), shown by its type, its config unread.
IMAGE_CONFIGS = (
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
)
JSON = "application/json"
PAGE = 100
SHOWN_MAX = 256  # characters of a platform cell (a 4 MiB architecture would pad every row)
CONFIG_MAX = 4 * 2**20  # bytes of an image config read at most (real ones are KiB)
TOKEN_EARLY = 30  # seconds before a token expires that a new one is asked for
SCOPES_PER_TOKEN = 40  # scopes one token request asks for at most (its URL stays short)
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


class ApiError(RegkitError):
    """The registry answered something other than what was asked for."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Tag:
    """One tag as the catalog shows it."""

    repository: str
    tag: str
    digest: str = ""
    size: int = 0
    platforms: list[str] = field(default_factory=list)
    created: str = ""
    index: bool = False
    # An artifact's type: its artifactType, else its config's media type.
    artifact: str = ""
    # An index's per-platform manifests, by digest.
    manifests: list[str] = field(default_factory=list)


class _Tunnelled(http.client.HTTPSConnection):
    """HTTPS to a local port (an SSH tunnel), verified for the registry's real name."""

    def __init__(self, port: int, server_name: str, context: ssl.SSLContext) -> None:
        super().__init__("127.0.0.1", port, context=context, timeout=30)
        self._server_name = server_name

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_name)


class RegistryApi:
    """The few read-only calls of the distribution v2 API the catalog needs, with token
    auth: the login buys one token per scope at ``/auth/token``, kept for its lifetime."""

    def __init__(self, port: int, reg: Registry, cafile: str, user: str, pw: str) -> None:
        self._conn = _Tunnelled(port, reg.domain, ssl.create_default_context(cafile=cafile))
        self._host = reg.address
        self._service = reg.domain
        self._login = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (token, good until)
        self._wanted: list[str] = []

    def _request(
        self, path: str, authorization: str, accept: str, method: str = "GET"
    ) -> tuple[bytes, dict[str, str]]:
        status, body, headers = self.call(method, path, authorization, accept)
        if status != 200:
            raise ApiError(f"{method} {path.split('?')[0]}: {status}", status)
        return body, headers

    def call(
        self, method: str, path: str, authorization: str, accept: str = JSON, limit: int = 0
    ) -> tuple[int, bytes, dict[str, str]]:
        """One request: (status, body, headers with lower-case names), whatever the status;
        with ``limit``, at most ``limit + 1`` bytes of the body (the rest left unread)."""
        headers = {"Host": self._host, "Authorization": authorization, "Accept": accept}
        self._conn.request(method, path, headers=headers)
        response = self._conn.getresponse()
        body = response.read(limit + 1) if limit else response.read()
        if limit and len(body) > limit:
            self._conn.close()  # its body half read: the next request opens a new one
        return response.status, body, {k.lower(): v for k, v in response.getheaders()}

    def bearer(self, scope: str) -> str:
        return f"Bearer {self.token(scope)}"

    def want(self, scopes: Iterable[str]) -> None:
        """Scopes about to be used: a token asked for covers up to SCOPES_PER_TOKEN of
        them, so that many repositories cost few password checks (nginx limits logins)."""
        self._wanted += scopes

    def _good(self, scope: str) -> bool:
        return time.monotonic() < self._tokens.get(scope, ("", 0.0))[1]

    def token(self, scope: str) -> str:
        """A token for ``scope`` (and wanted scopes without one), kept while it is good."""
        if not self._good(scope):
            more = [s for s in dict.fromkeys(self._wanted) if s != scope and not self._good(s)]
            scopes = [scope, *more[: SCOPES_PER_TOKEN - 1]]
            query = urlencode({"service": self._service, "scope": scopes}, doseq=True)
            answer = json.loads(self._request(f"/auth/token?{query}", self._login, JSON)[0])
            until = time.monotonic() + int(answer.get("expires_in", 60)) - TOKEN_EARLY
            self._tokens.update(dict.fromkeys(scopes, (answer["token"], until)))
        return self._tokens[scope][0]

    def get(self, path: str, scope: str, accept: str = JSON) -> tuple[Any, dict[str, str]]:
        body, headers = self._request(path, f"Bearer {self.token(scope)}", accept)
        return json.loads(body or b"null"), headers

    def paged(self, path: str, key: str, scope: str) -> Iterator[str]:
        """Every item of a paginated list (``_catalog`` or ``tags/list``), following Link."""
        url: str | None = f"{path}?n={PAGE}"
        while url:
            data, headers = self.get(url, scope)
            yield from _object(data).get(key) or []
            match = _NEXT.search(headers.get("link", ""))
            url = match.group(1) if match else None

    def tag(self, repo: str, tag: str) -> Tag:
        """One tag's details, each field read for its type."""
        path = f"/v2/{quote(repo)}/manifests/{quote(tag)}"
        answer, headers = self.get(path, pull_scope(repo), MANIFEST_TYPES)
        manifest = _object(answer)
        out = Tag(repo, tag, digest=headers.get("docker-content-digest", ""))
        if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
            entries = _objects(manifest.get("manifests"))
            out.index = True
            out.platforms = [p for m in entries if (p := platform(_object(m.get("platform"))))]
            out.size = sum(_count(m.get("size")) for m in entries)
            out.manifests = [d for m in entries if (d := _text(m.get("digest")))]
            return out
        config = _object(manifest.get("config"))
        layers = _objects(manifest.get("layers"))
        out.size = _count(config.get("size")) + sum(_count(layer.get("size")) for layer in layers)
        kind = _text(manifest.get("artifactType")) or _text(config.get("mediaType"))
        if kind and kind not in IMAGE_CONFIGS:
            out.artifact = kind
            return out
        blob = self.config(repo, digest) if (digest := _text(config.get("digest"))) else {}
        out.platforms = [p] if (p := platform(blob)) else []
        out.created = _text(blob.get("created"))
        return out

    def config(self, repo: str, digest: str) -> dict[str, Any]:
        """An image's config blob: a JSON object, else (not JSON, not an object, or over
        CONFIG_MAX bytes) none ({}); a pusher writes it, unchecked by the registry."""
        path = f"/v2/{quote(repo)}/blobs/{quote(digest, safe=':')}"
        status, body, _ = self.call("GET", path, self.bearer(pull_scope(repo)), limit=CONFIG_MAX)
        if status != 200:
            raise ApiError(f"GET {path}: {status}", status)
        try:
            return _object(json.loads(body)) if len(body) <= CONFIG_MAX else {}
        except (ValueError, RecursionError):  # RecursionError: nested deeper than json reads
            return {}


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _objects(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def platform(fields: dict[str, Any]) -> str:
    """``os/architecture`` of a config or an index's entry; none without an architecture."""
    os, arch = _text(fields.get("os")), _text(fields.get("architecture"))
    return "" if not arch else f"{os}/{arch}" if os else arch


def pull_scope(repo: str) -> str:
    return f"repository:{repo}:pull"


Skip = Callable[[str, str], None]  # told of each repository or tag left out: (what, why)


def _quiet(what: str, why: str) -> None: ...  # prune and migrate are not told


def skipper(report: Report, alias: str) -> Skip:
    """One ``skipped`` line per repository or tag left out of ``alias``'s catalog."""
    return lambda what, why: report.skipped(alias, f"catalog of {printable(what)}", printable(why))


def tags_of(api: RegistryApi, repo: str, skip: Skip = _quiet) -> list[str]:
    """A repository's tags; none, told to ``skip``, for one with blobs only (an upload that
    never got a manifest: tags/list answers 404) or whose tags were all deleted."""
    try:
        tags = sorted(api.paged(f"/v2/{quote(repo)}/tags/list", "tags", pull_scope(repo)))
    except ApiError as exc:
        if exc.status != 404:
            raise
        skip(repo, "no tags: the registry answered 404 to tags/list")
        return []
    if not tags:
        skip(repo, "no tags: its tag list is empty")
    return tags


def read_catalog(api: RegistryApi, skip: Skip = _quiet) -> list[Tag]:
    """Every tag of every repository but the deploy's own probe, with its details; a tag
    whose manifest or config is gone (deleted while read) is told to ``skip``."""
    found = []
    repos = [r for r in api.paged("/v2/_catalog", "repositories", "registry:catalog:*")]
    api.want(pull_scope(repo) for repo in repos)
    for repo in repos:
        for tag in tags_of(api, repo, skip) if repo != PROBE_REPO else []:
            try:
                found.append(api.tag(repo, tag))
            except ApiError as exc:
                if exc.status != 404:
                    raise
                skip(f"{repo}:{tag}", f"gone: {exc}")
    return found


def table(tags: list[Tag], address: str) -> str:
    """The catalog as an aligned text table (pure; unit-tested)."""
    if not tags:
        return printable(f"no repositories yet; push one: docker push {address}/<name>:<tag>")
    rows = [("REPOSITORY", "TAG", "DIGEST", "SIZE", "PLATFORM", "CREATED")]
    for t in tags:
        shown = ", ".join(t.platforms) or "-"
        if t.index:
            shown = f"index: {shown}"
        elif t.artifact:
            shown = f"artifact: {t.artifact}"
        shown = printable(shown)
        shown = shown if len(shown) <= SHOWN_MAX else shown[: SHOWN_MAX - 1] + "…"
        created = t.created[:19].replace("T", " ") or "-"
        cells = (t.repository, t.tag, t.digest[:19], human_size(t.size), shown, created)
        rows.append(tuple(printable(cell) for cell in cells))
    return aligned(rows)


def wait_listening(port: int, seconds: float = 5.0) -> None:
    """Fabric starts the tunnel's listener in a thread: wait until it accepts."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def api_session(inv: Inventory, target: Target) -> Iterator[RegistryApi]:
    """The registry's API on ``target`` through an SSH tunnel, as the deploy's own login
    (an admin); its failures become one-line RemoteErrors naming the host."""
    alias = target.alias
    password = users.probe_credential(inv)[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reg = inv.registry
    tunnel = target.conn.forward_local(
        local_port=port, remote_port=reg.port, remote_host="127.0.0.1"
    )
    try:
        with tunnel:
            yield from _session(alias, port, inv, password)
    except ThreadException as exc:
        errors = [w.value for w in exc.exceptions]
        if not all(isinstance(e, ConnectionResetError | BrokenPipeError) for e in errors):
            raise RemoteError(tunnel_failure(alias, reg.port, errors)) from None
        # A connection reset as the client closed it, after it had read its answers
        # (nginx ends a connection after 1000 requests): the session's own outcome counts.
        if isinstance(exc.__context__, Exception):
            raise exc.__context__ from None


def tunnel_failure(alias: str, port: int, errors: list[BaseException]) -> str:
    """Why the SSH tunnel to ``port`` failed, and what to do (pure): sshd answers a refused
    forward with channel error 1 (its config forbids forwarding) or 2 (nothing listens)."""
    codes = {getattr(e, "code", None) for e in errors}
    if 1 in codes:
        return (
            f"{alias}: the host's sshd refuses port forwarding, which catalog and prune "
            "need; set 'AllowTcpForwarding local' (or yes) for this user in sshd_config"
        )
    if 2 in codes:
        return (
            f"{alias}: nothing answers on port {port} on the host; "
            "is regkit-nginx running? see 'fab status'"
        )
    return f"{alias}: the SSH tunnel to port {port} failed: {'; '.join(map(str, errors))}"


def _session(alias: str, port: int, inv: Inventory, password: str) -> Iterator[RegistryApi]:
    try:
        wait_listening(port)
    except OSError as exc:
        raise RemoteError(f"{alias}: the SSH tunnel did not open: {exc}") from None
    api = RegistryApi(port, inv.registry, str(pki.paths(inv).ca_cert), users.PROBE_USER, password)
    try:
        yield api
    except ApiError as exc:
        raise RemoteError(f"{alias}: {printable(str(exc))}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise RemoteError(f"{alias}: the registry answered something unexpected: {exc!r}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise RemoteError(f"{alias}: cannot read the registry through SSH: {exc}") from None


@task(
    name="catalog",
    role="registry",
    help={
        "json": "Print JSON (a list of tags, each with its host) instead of a table.",
        "force": "Act on -H hosts whose inventory role is not registry.",
    },
)
def show_catalog(c: Context, json_: bool = False, force: bool = False) -> None:
    """List what was pushed: repositories, tags, digests, sizes, platforms, push dates."""
    inv = inventory.load()
    aliases = hosts_for(c, inv, "registry", "catalog", force)
    users.probe_credential(inv)
    # The catalog goes to stdout, to be read or piped; how each host went, to stderr.
    report = Report(stream=sys.stderr)
    found: dict[str, list[Tag]] = {}

    def work(target: Target) -> None:
        with api_session(inv, target) as api:
            found[target.alias] = read_catalog(api, skipper(report, target.alias))
        report.ok(target.alias, "catalog", f"{len(found[target.alias])} tags")

    try:
        each_host(c, inv, aliases, report, "catalog", work)
    finally:
        if json_:
            listed = [{**asdict(t), "host": alias} for alias, tags in found.items() for t in tags]
            print(json.dumps(listed, indent=2))
        else:
            for alias, tags in found.items():
                if len(aliases) > 1:
                    print(f"[{printable(alias)}]")
                print(table(tags, inv.registry.address))


ns = Collection("catalog", show_catalog)
