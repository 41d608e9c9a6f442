"""regkit's token service (distribution's token authentication, docs/spec/auth/token.md).

This service checks passwords (bcrypt, against the htpasswd file regkit deploys),
so that nginx's workers never do: a bcrypt check takes a worker's event loop for
its whole length, and a flood of wrong passwords would stall every pull with it.
Here checks run on a bounded number of threads, a core is left for the data path,
and a name that does not exist costs the same time as a wrong password for one
that does (no oracle for user names). nginx limits the rate of logins per client.
This service answers:

- ``GET /auth/token?service=...&scope=...``: a JWT, signed with the token key
  (ES256, its certificate in the ``x5c`` header), granting the intersection of the
  scopes asked for and the user's rights. An empty grant is a valid answer: the
  registry then says "denied".
- ``GET /auth/catalog``: the user, their role and the repositories they may pull
  (read from the registry with a catalog token the service signs for itself).
- ``GET /auth/check``: 204 for a valid login, else 401 (nginx's ``auth_request`` for
  the catalog page's files).
- ``GET /healthz``: "ok".

Every ``/auth/`` answer but ``/healthz`` needs a valid basic login; a wrong one
gets 401 and a ``Basic`` challenge. The password file and the rights are read
again whenever they change, so a change reaches the next request without a
restart. Standard library, PyJWT and bcrypt only.
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
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Generic, TypeVar
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
BCRYPT = (b"$2a$", b"$2b$", b"$2y$")
DEFAULT_COST = 12  # the cost of the stand-in hash when the file has no bcrypt entry
STAND_IN_COSTS = (4, 16)  # the stand-in's cost stays within these, whatever the file says
BCRYPT_MAX = 72  # bytes of a password bcrypt reads (crypt(3) and nginx ignore the rest)
SLOT_WAIT = 30  # seconds a login waits for a free check before it is told to retry
T = TypeVar("T")


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


def parse_htpasswd(text: bytes) -> dict[str, bytes]:
    """``user:hash`` lines as a mapping (blank lines and comments skipped)."""
    entries: dict[str, bytes] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith(b"#") or b":" not in line:
            continue
        name, _, hashed = line.partition(b":")
        entries[name.decode("utf-8", "replace")] = hashed.strip()
    return entries


def bcrypt_cost(hashed: bytes) -> int | None:
    """The cost of a bcrypt hash; None for anything else."""
    if len(hashed) != 60 or not hashed.startswith(BCRYPT) or not hashed[4:6].isdigit():
        return None
    return int(hashed[4:6])


def highest_cost(hashes: list[bytes]) -> int:
    """The dearest cost in the file (within STAND_IN_COSTS): what every failed login
    costs, so that none tells a name from another."""
    costs = [c for c in map(bcrypt_cost, hashes) if c is not None]
    low, high = STAND_IN_COSTS
    return min(max(max(costs, default=DEFAULT_COST), low), high)


def stand_in(cost: int) -> bytes:
    """A well-formed bcrypt hash at ``cost`` that no password matches: a check against
    it costs what a real one does (no hashing to make it)."""
    import bcrypt

    return bcrypt.gensalt(cost) + b"A" * 31


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) from a basic ``Authorization`` header; None for anything else."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon and user else None


def check_slots() -> int:
    """How many bcrypt checks may run at once: every core this process may use but one."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


class FairSlots:
    """At most ``slots`` holders at once; waiters are served round-robin by client, so
    a client that floods waits behind itself, and any other client waits for at most
    one turn of each client ahead of it."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._cond = threading.Condition()
        self._waiting: dict[str, deque[object]] = {}
        self._turns: deque[str] = deque()

    def acquire(self, client: str, timeout: float) -> bool:
        ticket = object()
        deadline = time.monotonic() + timeout
        with self._cond:
            if client not in self._waiting:
                self._waiting[client] = deque()
                self._turns.append(client)
            self._waiting[client].append(ticket)
            while not (self._free and self._waiting[self._turns[0]][0] is ticket):
                if not self._cond.wait(deadline - time.monotonic()):
                    self._leave(client, ticket)
                    return False
            self._leave(client, ticket)
            self._free -= 1
            return True

    def _leave(self, client: str, ticket: object) -> None:
        """Take ``ticket`` out of the queue; its client goes to the back of the turns."""
        self._waiting[client].remove(ticket)
        self._turns.remove(client)
        if self._waiting[client]:
            self._turns.append(client)
        else:
            del self._waiting[client]
        self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()


class Watched(Generic[T]):
    """A file read again whenever it changes on disk (an upload replaces it: a new
    inode): ``parse`` of its bytes, or of ``b""`` while it is not there."""

    def __init__(self, path: str, parse: Callable[[bytes], T]) -> None:
        self.path, self._parse = path, parse
        self._stamp: tuple[int, int, int] | None = None
        self._value = parse(b"")
        self._lock = threading.Lock()

    def read(self) -> T:
        with self._lock:
            try:
                now: tuple[int, int, int] | None = stamp(self.path)
            except OSError:
                now = None
            if now != self._stamp:
                self._value = self._parse(Path(self.path).read_bytes() if now else b"")
                self._stamp = now
            return self._value


def password_entries(text: bytes) -> tuple[dict[str, bytes], bytes]:
    """A password file's entries, and the stand-in hash a failed login is checked against."""
    entries = parse_htpasswd(text)
    return entries, stand_in(highest_cost(list(entries.values())))


class Passwords:
    """The password file, read again when it changes, and the checks against it.

    At most ``slots`` checks run at once (the others wait, in turns by client), so
    logins never take every core and a flood from one client does not hold the others
    up. Every failed login includes one check at the file's highest cost: a name that
    is not in the file (or whose entry is not bcrypt) is checked against a stand-in
    hash of that cost, and a wrong password for a cheaper entry (a robot, the deploy's
    probe) is checked against it too. So a failure takes as long for any name.
    """

    def __init__(self, path: str, slots: int) -> None:
        self._file = Watched(path, password_entries)
        self._slots = FairSlots(slots)

    def check(self, user: str, password: str, client: str = "") -> bool | None:
        """Whether the login is valid; None when no check came free in time."""
        entries, dearest = self._file.read()
        hashed = entries.get(user, b"")
        cost = bcrypt_cost(hashed)
        secret = password.encode()[:BCRYPT_MAX]
        if not self._slots.acquire(client, SLOT_WAIT):
            return None
        try:
            matched = checkpw(secret, hashed if cost is not None else dearest)
            if not matched and cost is not None and cost < (bcrypt_cost(dearest) or 0):
                checkpw(secret, dearest)
        finally:
            self._slots.release()
        return matched and cost is not None


def checkpw(secret: bytes, hashed: bytes) -> bool:
    """bcrypt's check; False for a password it refuses (a NUL byte in it)."""
    import bcrypt

    try:
        return bcrypt.checkpw(secret, hashed)
    except ValueError:
        return False


class Rights:
    """The rights file (each user's role and patterns), read again when it changes."""

    def __init__(self, path: str) -> None:
        self._file = Watched(path, lambda text: json.loads(text).get("users", {}) if text else {})

    def of(self, user: str) -> dict[str, Any] | None:
        return self._file.read().get(user)


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
        if url.path not in ("/auth/token", "/auth/catalog", "/auth/check"):
            self._send(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
            return
        user = self._login()
        if user is None:
            return
        if url.path == "/auth/token":
            self._token(user, parse_qs(url.query))
        elif url.path == "/auth/catalog":
            self._catalog(user)
        else:
            self._send(204, None)

    def _login(self) -> str | None:
        """The user of a valid basic login; otherwise answers 401 (or 503) and None."""
        credentials = basic_credentials(self.headers.get("Authorization", ""))
        client = self.headers.get("X-Real-IP", self.client_address[0])
        valid = self.server.passwords.check(*credentials, client) if credentials else False
        if valid is None:
            message = "too many logins are being checked; try again in a few seconds"
            self._send(503, {"errors": [{"code": "UNAVAILABLE", "message": message}]})
            return None
        if not valid or credentials is None:
            if credentials:
                self.log_message("login refused user=%r client=%s", credentials[0], client)
            challenge = {"WWW-Authenticate": f'Basic realm="{self.server.realm}"'}
            # No JSON body: Docker then prints "unauthorized: authentication required",
            # as it does for distribution's own basic auth.
            self._send_text(401, "authentication required\n", challenge)
            return None
        return credentials[0]

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

    def _send(
        self, status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self._write(status, data, "application/json" if body is not None else "", headers or {})

    def _send_text(self, status: int, text: str, headers: dict[str, str]) -> None:
        self._write(status, text.encode(), "text/plain; charset=utf-8", headers)

    def _write(self, status: int, data: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers.items():
            self.send_header(name, value)
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

    def __init__(
        self,
        address: tuple[str, int],
        keys: KeyFiles,
        access: tuple[Passwords, Rights],
        registry: str,
        realm: str,
    ):
        super().__init__(address, Handler)
        self._keys = keys
        self.passwords, self.rights = access
        self.registry = registry
        self.realm = realm

    @property
    def signer(self) -> Signer:
        return self._keys.signer()


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="regkit's token service")
    p.add_argument("--listen", default="0.0.0.0:5001")
    p.add_argument("--key", default="/etc/regkit-token/token.key")
    p.add_argument("--cert", default="/etc/regkit-token/token.crt")
    p.add_argument("--rights", default="/etc/regkit-rights/rights.json")
    p.add_argument("--passwords", default="/etc/regkit-auth/htpasswd")
    p.add_argument("--realm", default="Registry")
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
    access = (Passwords(args.passwords, check_slots()), Rights(args.rights))
    server = TokenServer((host, int(port)), keys, access, args.registry, args.realm)
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
