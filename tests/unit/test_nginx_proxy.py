"""The rendered nginx config, run for real: Debian's nginx on loopback before a stub
registry and the real token service.

The same templates as a deploy, rendered with a local layout (loopback port,
paths in a temp folder); the stub stands in for the registry (it challenges like
distribution with token auth) and records what nginx forwards; the token service
(tokend) runs in a thread with the state's token key.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import jwt
import pytest
import yaml
from cryptography import x509

from tasks import inventory, pki, render, signing, users
from tests.unit.conftest import PASSPHRASE, base_inventory
from tokend import service

PASSWORD = "correct horse battery"


NOT_ALLOWED = b'{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}'
CHALLENGE = 'Bearer realm="https://registry.unit.test/auth/token",service="registry.unit.test"'


class StubRegistry(BaseHTTPRequestHandler):
    """Answers /v2/ like a registry with token auth: 401 and a challenge without a
    bearer token, 200 with one; a POST gets the registry's own 405; records the
    forwarded headers."""

    seen: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        StubRegistry.seen.append(dict(self.headers))
        body = NOT_ALLOWED
        self.send_response(405)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        StubRegistry.seen.append(dict(self.headers))
        body = b"{}"
        bearer = self.headers.get("Authorization", "").startswith("Bearer ")
        short = self.path.startswith("/v2/forbidden/")  # as if the token lacked the scope
        self.send_response(200 if bearer and not short else 401)
        if not bearer:
            self.send_header("WWW-Authenticate", CHALLENGE)
        elif short:
            self.send_header("WWW-Authenticate", CHALLENGE + ',error="insufficient_scope"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def getheader(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


@dataclass
class Proxy:
    port: int
    ca: Path
    nginx_t: subprocess.CompletedProcess[str]
    seen: list[dict[str, str]] = field(default_factory=list)

    token_cert: Path = Path()
    root: Path = Path()

    def request(
        self,
        path: str,
        auth: tuple[str, str] | None = None,
        agent: str = "docker/27.0",
        headers: dict[str, str] | None = None,
        method: str = "GET",
        source: str = "127.0.0.1",
    ) -> Reply:
        """GET ``path`` over TLS, verified against the CA for 127.0.0.1 (an IP SAN), from
        the loopback address ``source`` (nginx limits logins per client address)."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=ctx, timeout=30, source_address=(source, 0)
        )
        headers = {"User-Agent": agent, **(headers or {})}
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        reply = Reply(response.status, dict(response.getheaders()), response.read())
        conn.close()
        return reply


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    assert shutil.which("nginx"), "Debian's nginx is needed (make deps installs it)"
    root = tmp_path_factory.mktemp("nginx")
    data = base_inventory()
    inv_path = root / "inv.yaml"
    inv_path.write_text(yaml.safe_dump(data))
    inv = inventory.load(inv_path)
    pki.init_pki(inv, PASSPHRASE)
    users.set_password(inv, "alice", PASSWORD)
    users.set_password(inv, "carol", PASSWORD)  # in the password file, without rights

    stub = ThreadingHTTPServer(("127.0.0.1", 0), StubRegistry)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    signing.material(inv)
    keys = service.KeyFiles(
        str(signing.key_path(inv)), str(signing.cert_path(inv)), signing.ISSUER,
        inv.registry.domain,
    )  # fmt: skip
    (root / "rights.json").write_text('{"users": {"alice": {"role": "push", "repos": ["*"]}}}')
    access = (
        service.Passwords(str(users.password_file(inv)), slots=1),
        service.Rights(str(root / "rights.json")),
    )
    tokens = service.TokenServer(
        ("127.0.0.1", 0), keys, access, "http://127.0.0.1:1", "Registry registry.unit.test"
    )
    threading.Thread(target=tokens.serve_forever, daemon=True).start()
    port = free_port()
    layout = render.Layout(
        listen=f"127.0.0.1:{port}",
        upstream=f"127.0.0.1:{stub.server_address[1]}",
        tokend_upstream=f"127.0.0.1:{tokens.server_address[1]}",
        tls_dir=str(root / "tls"),
        maintenance_dir=str(root / "maintenance"),
        site_conf=str(root / "registry.conf"),
        ui_dir=str(root / "ui"),
        pid_file=str(root / "nginx.pid"),
        access_log=str(root / "access.log"),
        worker_user="root",
        worker_group="root",
    )
    ctx = render.context(inv, layout)
    (root / "nginx.conf").write_text(render.render("nginx.conf.j2", ctx))
    (root / "registry.conf").write_text(render.render("registry.conf.j2", ctx))
    shutil.copytree(render.TEMPLATES / "ui", root / "ui")
    (root / "tls").mkdir()
    (root / "maintenance").mkdir()
    shutil.copy(pki.paths(inv).server_cert, root / "tls/server.crt")
    shutil.copy(pki.paths(inv).server_key, root / "tls/server.key")

    base = ["nginx", "-p", str(root), "-c", str(root / "nginx.conf"), "-e", "stderr"]
    nginx_t = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=30)
    assert nginx_t.returncode == 0, nginx_t.stderr
    server = subprocess.Popen([*base, "-g", "daemon off;"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    StubRegistry.seen = []
    try:
        yield Proxy(
            port, pki.paths(inv).ca_cert, nginx_t, StubRegistry.seen, signing.cert_path(inv), root
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
        stub.shutdown()
        tokens.shutdown()


def test_nginx_accepts_the_rendered_config(proxy: Proxy) -> None:
    assert "syntax is ok" in proxy.nginx_t.stderr
    assert "test is successful" in proxy.nginx_t.stderr


def test_ping_answers_without_auth_and_leaks_no_version(proxy: Proxy) -> None:
    response = proxy.request("/_ping")
    assert response.status == 200
    assert response.getheader("Server") == "nginx"
    assert response.getheader("Strict-Transport-Security") == "max-age=63072000"


def test_v2_without_a_token_is_the_registrys_challenge(proxy: Proxy) -> None:
    response = proxy.request("/v2/")
    assert response.status == 401
    assert response.getheader("Docker-Distribution-Api-Version") == "registry/2.0"
    assert response.getheader("WWW-Authenticate") == CHALLENGE
    # nginx no longer checks passwords on /v2/: a basic login is the registry's to refuse.
    assert proxy.request("/v2/", auth=("alice", PASSWORD)).status == 401


def token_for(
    proxy: Proxy, auth: tuple[str, str], scope: str = "", headers: dict[str, str] | None = None
) -> dict:
    query = "service=registry.unit.test" + (f"&scope={scope}" if scope else "")
    response = proxy.request(f"/auth/token?{query}", auth=auth, headers=headers)
    assert response.status == 200, response.body
    return json.loads(response.body)


def test_a_login_gets_a_signed_token_naming_the_user_who_logged_in(proxy: Proxy) -> None:
    # A client that claims another user in a header gets its own name.
    answer = token_for(
        proxy,
        ("alice", PASSWORD),
        "repository:team-a/app:pull,push",
        headers={"X-Regkit-User": "admin"},
    )
    assert answer["expires_in"] == 300 and answer["access_token"] == answer["token"]
    claims = jwt.decode(
        answer["token"],
        x509.load_pem_x509_certificate(proxy.token_cert.read_bytes()).public_key(),
        algorithms=["ES256"],
        audience="registry.unit.test",
        issuer="regkit token service",
    )
    assert claims["sub"] == "alice"
    assert claims["access"] == [
        {"type": "repository", "name": "team-a/app", "actions": ["pull", "push"]}
    ]


def test_a_user_without_rights_gets_an_empty_grant(proxy: Proxy) -> None:
    answer = token_for(proxy, ("carol", PASSWORD), "repository:team-a/app:pull")
    assert jwt.decode(answer["token"], options={"verify_signature": False})["access"] == []


def test_the_token_endpoint_takes_only_get(proxy: Proxy) -> None:
    assert proxy.request("/auth/token", auth=("alice", PASSWORD), method="POST").status == 405


def test_a_token_reaches_the_registry_as_sent(proxy: Proxy) -> None:
    token = token_for(proxy, ("alice", PASSWORD))["token"]
    before = len(proxy.seen)
    response = proxy.request("/v2/", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200
    assert response.getheader("Docker-Distribution-Api-Version") == "registry/2.0"
    forwarded = proxy.seen[before]
    assert forwarded["Authorization"] == f"Bearer {token}"
    assert forwarded["X-Forwarded-Proto"] == "https"
    assert forwarded["Host"] == f"127.0.0.1:{proxy.port}"
    assert forwarded["X-Forwarded-For"] == "127.0.0.1"


def test_a_token_short_of_the_scope_gets_the_registrys_challenge_as_it_is(proxy: Proxy) -> None:
    """Docker turns a 401 whose challenge says insufficient_scope into "denied"."""
    token = token_for(proxy, ("alice", PASSWORD))["token"]
    response = proxy.request(
        "/v2/forbidden/tags/list", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 401
    assert response.getheader("WWW-Authenticate") == CHALLENGE + ',error="insufficient_scope"'
    assert response.getheader("Docker-Distribution-Api-Version") == "registry/2.0"


def test_a_wrong_password_is_answered_alike_for_every_user(proxy: Proxy) -> None:
    """Status, headers and body are the same whether the user exists with rights
    (alice), exists without them (carol) or does not exist (mallory)."""
    replies = [
        proxy.request("/auth/token?service=registry.unit.test", auth=(name, "wrong password!"))
        for name in ("alice", "carol", "mallory")
    ]
    assert {r.status for r in replies} == {401}
    shapes = {
        (tuple(sorted(set(r.headers.items()) - {("Date", r.getheader("Date"))})), r.body)
        for r in replies
    }
    assert len(shapes) == 1


def test_other_paths_need_a_login_too(proxy: Proxy) -> None:
    assert proxy.request("/anything").status == 401
    assert proxy.request("/anything", auth=("alice", PASSWORD)).status == 404


def test_catalog_page_needs_a_login(proxy: Proxy) -> None:
    assert proxy.request("/").status == 401
    assert proxy.request("/ui/app.js").status == 401
    page = proxy.request("/", auth=("alice", PASSWORD))
    assert page.status == 200
    assert b"<title>Registry</title>" in page.body
    assert "script-src 'self'" in page.getheader("Content-Security-Policy")
    script = proxy.request("/ui/app.js", auth=("alice", PASSWORD))
    assert script.status == 200
    assert script.getheader("Content-Type") == "application/javascript"
    assert b"/auth/catalog" in script.body
    assert proxy.request("/ui/nope.js", auth=("alice", PASSWORD)).status == 404


def test_ancient_docker_clients_are_refused(proxy: Proxy) -> None:
    response = proxy.request("/v2/", auth=("alice", PASSWORD), agent="docker/1.5.0 go/go1.4")
    assert response.status == 404


def tls_handshake(port: int, version: ssl.TLSVersion) -> str:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw) as tls,
    ):
        return tls.version() or ""


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_12_and_13_are_accepted(proxy: Proxy, version: ssl.TLSVersion) -> None:
    assert tls_handshake(proxy.port, version) == version.name.replace("v1_", "v1.")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_is_refused_by_the_server(proxy: Proxy, version: ssl.TLSVersion) -> None:
    with pytest.raises(ssl.SSLError) as err:
        tls_handshake(proxy.port, version)
    # The client did offer the old version; the server refused it.
    assert "NO_PROTOCOLS_AVAILABLE" not in str(err.value)
    assert "PROTOCOL_VERSION" in str(err.value).upper()


def test_logins_are_limited_per_client_address_and_only_logins(proxy: Proxy) -> None:
    """A flood of wrong passwords from one address: no more than the burst reaches the
    token service at once, the rest get 429 without a check; requests without a login,
    and logins from another address, are not held back."""
    flooder = "127.0.0.9"

    def wrong(_: int) -> int:
        path = "/auth/token?service=registry.unit.test"
        return proxy.request(path, auth=("alice", "wrong password!"), source=flooder).status

    with ThreadPoolExecutor(max_workers=40) as pool:
        replies = list(pool.map(wrong, range(40)))
    checked, limited = replies.count(401), replies.count(429)
    assert checked + limited == 40, replies
    # 1 + the burst (20), and the odd one the rate (1/s) lets through meanwhile.
    assert 21 <= checked <= 24, replies
    assert proxy.request("/", source=flooder).status == 401  # no login: not counted
    assert proxy.request("/auth/catalog", auth=("alice", PASSWORD)).status != 429


@pytest.mark.parametrize(
    ("flag", "why"),
    [("gc", "garbage is collected (fab gc)"), ("migrate", "its data is copied to S3")],
)
def test_the_read_only_message_only_while_gc_or_a_migration_runs(
    proxy: Proxy, flag: str, why: str
) -> None:
    upload = "/v2/team-a/app/blobs/uploads/"
    outside = proxy.request(upload, method="POST")
    assert (outside.status, outside.body) == (405, NOT_ALLOWED)  # the registry's own
    raised = proxy.root / "maintenance" / flag
    raised.touch()
    try:
        before = len(proxy.seen)
        during = proxy.request(upload, method="POST")
        assert len(proxy.seen) == before  # refused by nginx; the registry never sees it
        assert proxy.request("/v2/", method="GET").status == 401  # reads pass meanwhile
    finally:
        raised.unlink()
    assert during.status == 405
    assert f"the registry is read-only while {why}".encode() in during.body
    assert during.getheader("Docker-Distribution-Api-Version") == "registry/2.0"


def test_redirects_and_location_headers_never_take_the_clients_host(proxy: Proxy) -> None:
    redirect = proxy.request("/v2", headers={"Host": "evil.example"})
    assert redirect.status == 301
    assert redirect.getheader("Location") == "/v2/"
    before = len(proxy.seen)
    proxy.request("/v2/", headers={"X-Forwarded-Host": "evil.example"})
    assert proxy.seen[before]["X-Forwarded-Host"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("groups", "accepted"),
    [("X25519", True), ("P-256", True), ("P-384", True), ("X448", False), ("P-521", False)],
)
def test_tls_offers_mozillas_intermediate_groups_only(
    proxy: Proxy, groups: str, accepted: bool
) -> None:
    handshake = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{proxy.port}",
            "-tls1_3",
            "-groups",
            groups,
            "-brief",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (handshake.returncode == 0) is accepted, handshake.stderr


# What an attacker on the network tried that held (issue #22's "tried by an attacker"
# table, docs/reliability.md): each is tried again here against the real nginx.

TRICKS = [
    "/auth/token/", "/auth//token", "/auth/./token", "/auth/%74oken", "/Auth/token",
    "//auth/token", "/ui/../auth/token", "/ui/%2e%2e/auth/token", "/_ping/../ui/app.js",
    "/_ping%2f..%2fui/app.js", "/ui/..%2f..%2fetc/passwd", "/ui../", "/ui/../../etc/passwd",
    "/v2/../ui/app.js", "/%2fui/app.js", "/ui/app.js%00", "/ui/app.js;.css", "/index.html",
    "/_ping/x", "/_regkit/login", "/ui%2fapp.js", "/./ui/app.js", "/ui/./app.js",
    "/UI/app.js", "/ui/app.js?", "/ui/app.js#x", "/%75i/app.js", "/ui/app.js/",
]  # fmt: skip


@pytest.mark.parametrize("path", TRICKS)
def test_no_path_trick_reaches_a_page_or_a_token_without_a_login(proxy: Proxy, path: str) -> None:
    reply = proxy.request(path)
    assert reply.status in (400, 401, 404), (path, reply.status)
    assert b"/auth/catalog" not in reply.body and b'"token"' not in reply.body


@pytest.mark.parametrize("method", ["TRACE", "OPTIONS", "PROPFIND", "PUT", "DELETE", "POST"])
@pytest.mark.parametrize("path", ["/", "/ui/app.js", "/auth/token", "/auth/catalog", "/x"])
def test_no_odd_method_gets_past_the_login(proxy: Proxy, method: str, path: str) -> None:
    reply = proxy.request(path, method=method)
    assert reply.status in (401, 405), (method, path, reply.status)


def raw_tls(proxy: Proxy, data: bytes, hold: float = 0) -> bytes:
    """``data`` over a fresh TLS connection; everything the server answers (until it
    closes, or 3 s of silence)."""
    ctx = ssl.create_default_context(cafile=str(proxy.ca))
    with (
        socket.create_connection(("127.0.0.1", proxy.port), timeout=3) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(data)
        answer = b""
        try:
            while chunk := tls.recv(65536):
                answer += chunk
        except (TimeoutError, ssl.SSLError):
            pass
        return answer


@pytest.mark.parametrize(
    "host_headers",
    [b"", b"Host: evil.example\r\n", b"Host: a\r\nHost: b\r\n", b"Host: 127.0.0.1:1\r\n"],
)
def test_odd_host_headers_get_no_page(proxy: Proxy, host_headers: bytes) -> None:
    answer = raw_tls(
        proxy, b"GET /ui/app.js HTTP/1.1\r\n" + host_headers + b"Connection: close\r\n\r\n"
    )
    status = answer.split(b"\r\n", 1)[0]
    assert status.split()[1] in (b"400", b"401"), answer[:200]


def test_a_smuggled_request_is_refused(proxy: Proxy) -> None:
    """Content-Length and Transfer-Encoding at once (CL.TE): nginx answers 400 and
    closes, so the request hidden in the body is never read as a second one."""
    hidden = b"GET /ui/app.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    answer = raw_tls(
        proxy,
        b"POST /_ping HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 47\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden,
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1


def test_oversized_headers_are_refused_and_the_server_keeps_serving(proxy: Proxy) -> None:
    answer = raw_tls(
        proxy, b"GET /_ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert proxy.request("/_ping").status == 200


def test_slow_clients_holding_connections_do_not_starve_others(proxy: Proxy) -> None:
    """40 connections that send half a request and wait (slowloris): a normal request
    is still answered."""
    ctx = ssl.create_default_context(cafile=str(proxy.ca))
    held = []
    try:
        for _ in range(40):
            raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            tls.sendall(b"GET /ui/app.js HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
            held.append(tls)
        assert proxy.request("/_ping").status == 200
        assert proxy.request("/auth/catalog", auth=("alice", PASSWORD)).status != 429
    finally:
        for tls in held:
            tls.close()


@pytest.mark.parametrize("cipher", ["AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA"])
def test_tls_12_refuses_ciphers_without_forward_secrecy_or_aead(proxy: Proxy, cipher: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(cipher)
    with (
        socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw,
        pytest.raises(ssl.SSLError),
    ):
        ctx.wrap_socket(raw)


def test_the_page_puts_registry_text_in_as_text_never_as_html() -> None:
    """Stored XSS through a pushed config or annotation: the page sets only
    textContent, and its CSP (test_catalog_page_needs_a_login) allows no inline script."""
    script = (render.TEMPLATES / "ui" / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert "textContent" in script
