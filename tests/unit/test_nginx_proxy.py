"""The rendered nginx config, run for real: Debian's nginx on loopback before a stub registry.

The same templates as a deploy, rendered with a local layout (loopback port,
paths in a temp folder); the stub stands in for the registry and records what
nginx forwards.
"""

from __future__ import annotations

import base64
import http.client
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from tasks import inventory, pki, render, users
from tests.unit.conftest import PASSPHRASE, base_inventory

PASSWORD = "correct horse battery"


class StubRegistry(BaseHTTPRequestHandler):
    """Answers /v2/ like a registry would, and records the forwarded headers."""

    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        StubRegistry.seen.append(dict(self.headers))
        body = b"{}"
        self.send_response(200)
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

    def request(
        self, path: str, auth: tuple[str, str] | None = None, agent: str = "docker/27.0"
    ) -> Reply:
        """GET ``path`` over TLS, verified against the CA for 127.0.0.1 (an IP SAN)."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=10)
        headers = {"User-Agent": agent}
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
        conn.request("GET", path, headers=headers)
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

    stub = ThreadingHTTPServer(("127.0.0.1", 0), StubRegistry)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    port = free_port()
    layout = render.Layout(
        listen=f"127.0.0.1:{port}",
        upstream=f"127.0.0.1:{stub.server_address[1]}",
        tls_dir=str(root / "tls"),
        auth_dir=str(root / "auth"),
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
    (root / "auth").mkdir()
    shutil.copy(pki.paths(inv).server_cert, root / "tls/server.crt")
    shutil.copy(pki.paths(inv).server_key, root / "tls/server.key")
    shutil.copy(users.password_file(inv), root / "auth/htpasswd")

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
        yield Proxy(port, pki.paths(inv).ca_cert, nginx_t, StubRegistry.seen)
    finally:
        server.terminate()
        server.wait(timeout=10)
        stub.shutdown()


def test_nginx_accepts_the_rendered_config(proxy: Proxy) -> None:
    assert "syntax is ok" in proxy.nginx_t.stderr
    assert "test is successful" in proxy.nginx_t.stderr


def test_ping_answers_without_auth_and_leaks_no_version(proxy: Proxy) -> None:
    response = proxy.request("/_ping")
    assert response.status == 200
    assert response.getheader("Server") == "nginx"
    assert response.getheader("Strict-Transport-Security") == "max-age=63072000"


def test_v2_without_credentials_is_401_with_api_version(proxy: Proxy) -> None:
    response = proxy.request("/v2/")
    assert response.status == 401
    assert response.getheader("Docker-Distribution-Api-Version") == "registry/2.0"
    assert response.getheader("WWW-Authenticate") == 'Basic realm="Registry registry.unit.test"'


def test_v2_with_bcrypt_user_reaches_the_registry(proxy: Proxy) -> None:
    before = len(proxy.seen)
    response = proxy.request("/v2/", auth=("alice", PASSWORD))
    assert response.status == 200
    assert response.getheader("Docker-Distribution-Api-Version") == "registry/2.0"
    forwarded = proxy.seen[before]
    assert forwarded["X-Forwarded-Proto"] == "https"
    assert forwarded["Host"] == f"127.0.0.1:{proxy.port}"
    assert forwarded["X-Forwarded-For"] == "127.0.0.1"


@pytest.mark.parametrize("auth", [("alice", "wrong password!"), ("mallory", PASSWORD)])
def test_wrong_password_or_user_is_401(proxy: Proxy, auth: tuple[str, str]) -> None:
    response = proxy.request("/v2/", auth=auth)
    assert response.status == 401
    assert response.getheader("Docker-Distribution-Api-Version") == "registry/2.0"


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
    assert b"/v2/_catalog" in script.body
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
