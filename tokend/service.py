"""regkit's token service (distribution's token authentication, docs/spec/auth/token.md).

nginx checks the user's password (``auth_basic`` on ``/auth/``) and passes the
name it checked as ``X-Regkit-User``; the password never reaches this process.
This service answers:

- ``GET /auth/token?service=...&scope=...``: a JWT, signed with the token key
  (ES256, its certificate in the ``x5c`` header), granting the intersection of the
  scopes asked for and the user's rights. An empty grant is a valid answer: the
  registry then says "denied".
- ``GET /auth/catalog``: the user, their role and the repositories they may pull
  (read from the registry with a catalog token the service signs for itself).
- ``GET /healthz``: "ok".

Rights are read from a JSON file on every request (when it changed), so a change
reaches the next token without a restart. Standard library and PyJWT only.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import fnmatch
import json
import os
import secrets
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

# Each role is a superset of the one before. "delete" is what distribution 2.8 asks
# for a DELETE; "*" covers the catalog and anything else an admin may do.
ROLES: dict[str, tuple[str, ...]] = {
    "pull": ("pull",),
    "push": ("pull", "push"),
    "admin": ("pull", "push", "delete", "*"),
}
LIFETIME = 300  # seconds a token is valid
LEEWAY = 10  # seconds of clock skew a token's nbf allows
USER_HEADER = "X-Regkit-User"


def parse_scope(scope: str) -> tuple[str, str, tuple[str, ...]] | None:
    """``type:name:actions`` as a tuple; None when it is not one. The name may hold
    ``:`` (a registry with a port), so the type is the first field, the actions the last."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name:
        return None
    return kind, name, tuple(a for a in actions.split(",") if a)


def covers(patterns: list[str], name: str) -> bool:
    """Whether a repository name is under one of the patterns (``*`` matches ``/`` too)."""
    return any(p == "*" or fnmatch.fnmatchcase(name, p) for p in patterns)


def may_list_catalog(rights: dict[str, Any]) -> bool:
    return rights.get("role") == "admin" or "*" in rights.get("repos", [])


def grant(rights: dict[str, Any] | None, scopes: list[str]) -> list[dict[str, Any]]:
    """The access a token carries: each scope asked for, cut down to what ``rights``
    (``{"role": ..., "repos": [...]}``) allow; scopes that keep no action are left out."""
    if not rights:
        return []
    allowed = ROLES.get(rights.get("role", ""), ())
    patterns = list(rights.get("repos", []))
    out: list[dict[str, Any]] = []
    for scope in scopes:
        parsed = parse_scope(scope)
        if parsed is None:
            continue
        kind, name, actions = parsed
        if kind == "repository" and covers(patterns, name):
            granted = [a for a in actions if a in allowed]
        elif (kind, name) == ("registry", "catalog") and may_list_catalog(rights):
            granted = [a for a in actions if a == "*"]
        else:
            granted = []
        if granted:
            out.append({"type": kind, "name": name, "actions": granted})
    return out


def scopes_of(query: dict[str, list[str]]) -> list[str]:
    """Every scope asked for: ``scope`` may repeat, and may hold several separated by spaces."""
    return [s for value in query.get("scope", []) for s in value.split()]


def stamp(path: str) -> tuple[int, int, int]:
    """What changes when a file is replaced or rewritten: inode, mtime, size."""
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size


@dataclass
class Rights:
    """The rights file, read again whenever it changes on disk."""

    path: str
    _stamp: tuple[int, int, int] = (0, 0, 0)
    _users: dict[str, dict[str, Any]] = field(default_factory=dict)

    def of(self, user: str) -> dict[str, Any] | None:
        try:
            now = stamp(self.path)
        except OSError:
            self._users = {}
            return None
        if now != self._stamp:
            with open(self.path, "rb") as f:
                self._users = json.load(f).get("users", {})
            self._stamp = now
        return self._users.get(user)


class Signer:
    """Signs tokens with the token key; its certificate goes in the ``x5c`` header."""

    def __init__(self, key_pem: bytes, cert_pem: bytes, issuer: str, service: str) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        self._key = serialization.load_pem_private_key(key_pem, password=None)
        cert = x509.load_pem_x509_certificate(cert_pem)
        if cert.public_key().public_numbers() != self._key.public_key().public_numbers():
            raise ValueError("the token certificate is not the signing key's")
        self._x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        self.issuer = issuer
        self.service = service

    def sign(self, user: str, access: list[dict[str, Any]], now: float | None = None) -> str:
        import jwt

        issued = int(now if now is not None else time.time())
        claims = {
            "iss": self.issuer,
            "sub": user,
            "aud": self.service,
            "exp": issued + LIFETIME,
            "nbf": issued - LEEWAY,
            "iat": issued,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": self._x5c})


def token_response(token: str, now: float) -> dict[str, Any]:
    issued = datetime.datetime.fromtimestamp(int(now), datetime.UTC)
    return {
        "token": token,
        "access_token": token,
        "expires_in": LIFETIME,
        "issued_at": issued.isoformat().replace("+00:00", "Z"),
    }


# The deploy's own test image (tasks.layout.PROBE_REPO): not shown on the catalog page.
PROBE_REPO = "regkit/probe"


def registry_catalog(registry: str, token: str) -> list[str]:
    """Every repository in the registry, following the catalog's pages."""
    names: list[str] = []
    path: str | None = "/v2/_catalog?n=1000"
    while path:
        headers = {"Authorization": f"Bearer {token}"}
        request = urllib.request.Request(registry + path, headers=headers)  # noqa: S310 - http://registry
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            names += json.load(response).get("repositories") or []
            link = response.headers.get("Link", "")
        path = link[1 : link.index(">")] if link.startswith("<") and 'rel="next"' in link else None
    return names


class Handler(BaseHTTPRequestHandler):
    server: TokenServer
    server_version = "regkit-token"
    sys_version = ""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/healthz":
            self._send(200, {"status": "ok"})
            return
        user = self.headers.get(USER_HEADER, "")
        if not user:
            self._send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "no user"}]})
            return
        if url.path == "/auth/token":
            self._token(user, parse_qs(url.query))
        elif url.path == "/auth/catalog":
            self._catalog(user)
        else:
            self._send(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})

    def _token(self, user: str, query: dict[str, list[str]]) -> None:
        srv = self.server
        service = query.get("service", [srv.signer.service])[0]
        if service != srv.signer.service:
            message = f"this token service serves {srv.signer.service!r}, not {service!r}"
            self._send(400, {"errors": [{"code": "UNSUPPORTED", "message": message}]})
            return
        asked = scopes_of(query)
        access = grant(srv.rights.of(user), asked)
        now = time.time()
        granted = " ".join(f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access)
        self.log_message("token user=%s asked=%s granted=%s", user, " ".join(asked), granted)
        self._send(200, token_response(srv.signer.sign(user, access, now), now))

    def _catalog(self, user: str) -> None:
        srv = self.server
        rights = srv.rights.of(user) or {}
        full = [{"type": "registry", "name": "catalog", "actions": ["*"]}]
        try:
            names = registry_catalog(srv.registry, srv.signer.sign(srv.signer.issuer, full))
        except OSError as exc:
            message = f"the registry did not answer: {exc}"
            self._send(502, {"errors": [{"code": "UNAVAILABLE", "message": message}]})
            return
        role = rights.get("role", "")
        mine = [n for n in names if n != PROBE_REPO]
        visible = [n for n in mine if role and covers(list(rights.get("repos", [])), n)]
        self.log_message("catalog user=%s repositories=%d", user, len(visible))
        body = {"user": user, "role": role, "service": srv.signer.service, "repositories": visible}
        self._send(200, body)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Requests are logged by what they granted (above), not by their URL."""

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.log_date_time_string()} {format % args}\n")


class KeyFiles:
    """The signing key and certificate on disk: a new pair (a deploy from new local
    state) is used from the next token on, without a restart."""

    def __init__(self, key: str, cert: str, issuer: str, service: str) -> None:
        self._paths = (key, cert)
        self._issuer, self._service = issuer, service
        self._stamps: tuple[tuple[int, int, int], ...] = ()
        self._signer: Signer | None = None

    def signer(self) -> Signer:
        stamps = tuple(stamp(p) for p in self._paths)
        if self._signer is None or stamps != self._stamps:
            key, cert = (Path(p).read_bytes() for p in self._paths)
            try:
                self._signer = Signer(key, cert, self._issuer, self._service)
            except ValueError:
                # Caught between the two files of a new pair: the old pair until both are in.
                if self._signer is None:
                    raise
                return self._signer
            self._stamps = stamps
        return self._signer


class TokenServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], keys: KeyFiles, rights: Rights, registry: str):
        super().__init__(address, Handler)
        self._keys = keys
        self.rights = rights
        self.registry = registry

    @property
    def signer(self) -> Signer:
        return self._keys.signer()


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="regkit's token service")
    p.add_argument("--listen", default="0.0.0.0:5001")
    p.add_argument("--key", default="/etc/regkit-token/token.key")
    p.add_argument("--cert", default="/etc/regkit-token/token.crt")
    p.add_argument("--rights", default="/etc/regkit-rights/rights.json")
    p.add_argument("--registry", default="http://registry:5000")
    p.add_argument("--issuer", default="regkit")
    p.add_argument("--service", required="--health" not in (argv or sys.argv))
    p.add_argument("--health", action="store_true", help="check the running service and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    host, _, port = args.listen.rpartition(":")
    if args.health:
        url = f"http://127.0.0.1:{port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return 0 if response.status == 200 else 1
        except OSError:
            return 1
    keys = KeyFiles(args.key, args.cert, args.issuer, args.service)
    keys.signer()  # fail at start, not at the first request, if the key is unreadable
    server = TokenServer((host, int(port)), keys, Rights(args.rights), args.registry)
    # As PID 1 in its container, SIGTERM (docker stop, a daemon restart) would be
    # ignored and end in SIGKILL after 10 s: stop at once instead.
    signal.signal(signal.SIGTERM, stop)
    sys.stderr.write(f"regkit token service for {args.service} on {args.listen}\n")
    try:
        server.serve_forever()
    except SystemExit:
        sys.stderr.write("regkit token service: stopped\n")
    finally:
        server.server_close()
    return 0


def stop(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
