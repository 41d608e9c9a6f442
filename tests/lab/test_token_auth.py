"""Token auth (issue #15) with real docker clients: roles, patterns, robots, the
registry's checks of every token, one password check per session, live rights."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import secrets
import threading
import uuid

import fabric
import jwt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tasks import signing
from tasks.inventory import ENV_VAR
from tests.lab.conftest import (
    CA_FILE,
    DOMAIN,
    PASSWORD,
    USER,
    Lab,
    fab,
    must,
    run_root,
    sh,
    trust_by_certs_d,
    watch_processes,
)

PULLER, PUSHER, ADMIN = "puller", "team-a-dev", "boss"
SECRET = {name: f"{name}-Lab-pass-{i}77" for i, name in enumerate((PULLER, PUSHER, ADMIN))}
URL = f"https://{DOMAIN}"


def run(conn: fabric.Connection, script: str, stdin: str | None = None) -> tuple[int, str]:
    """Run ``script`` as root; (exit code, stdout and stderr), never failing the test."""
    status, out, err = run_root(conn, script, stdin)
    return status, (out + err).strip()


def as_user(user: str) -> str:
    """A shell prefix: docker with this user's own config folder (logins do not mix)."""
    return f"export DOCKER_CONFIG=/root/.docker-{user}; mkdir -p $DOCKER_CONFIG; "


def docker_login(conn: fabric.Connection, user: str, password: str) -> None:
    out = sh(conn, as_user(user) + f"docker login -u {user} --password-stdin {DOMAIN}", password)
    assert "Login Succeeded" in out


def build(conn: fabric.Connection, ref: str, layers: int = 1) -> None:
    """A new image of ``layers`` random 64 KiB layers, tagged ``ref``."""
    steps = "".join(f"COPY l{i} /l{i}\\n" for i in range(layers))
    sh(
        conn,
        "d=$(mktemp -d) && "
        f"for i in $(seq 0 {layers - 1}); do head -c 65536 /dev/urandom > $d/l$i; done && "
        f"printf 'FROM scratch\\n{steps}' > $d/Dockerfile && "
        f"docker build -q -t {ref} $d >/dev/null && rm -rf $d",
    )


def push(conn: fabric.Connection, user: str, ref: str) -> tuple[int, str]:
    return run(conn, as_user(user) + f"docker push {ref}")


def pull(conn: fabric.Connection, user: str, ref: str) -> tuple[int, str]:
    return run(conn, as_user(user) + f"docker rmi -f {ref} >/dev/null 2>&1; docker pull {ref}")


def token(conn: fabric.Connection, user: str, password: str, *scopes: str) -> str:
    """A token from /auth/token, asked as curl would (login on stdin)."""
    query = "&".join([f"service={DOMAIN}", *(f"scope={s}" for s in scopes)])
    out = sh(
        conn,
        f"curl -sS --fail -K - --cacert {CA_FILE} '{URL}/auth/token?{query}'",
        f'user = "{user}:{password}"\n',
    )
    return json.loads(out)["token"]


def api(
    conn: fabric.Connection, method: str, path: str, bearer: str, accept: str = ""
) -> tuple[str, str]:
    """(status, body) of one API call with a token (sent on stdin, not in argv)."""
    header = f'header = "Accept: {accept}"\n' if accept else ""
    verb = "-I" if method == "HEAD" else f"-X {method}"
    out = sh(
        conn,
        f"curl -s -K - {verb} -w '\\n%{{http_code}}' --cacert {CA_FILE} '{URL}{path}'",
        f'header = "Authorization: Bearer {bearer}"\n{header}',
    )
    body, _, status = out.rpartition("\n")
    return status, body


MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def manifest_digest(conn: fabric.Connection, repo: str, tag: str) -> str:
    bearer = token(conn, USER, PASSWORD, f"repository:{repo}:pull")
    out = sh(
        conn,
        f"curl -s -I -K - --cacert {CA_FILE} '{URL}/v2/{repo}/manifests/{tag}' | tr -d '\\r'",
        f'header = "Authorization: Bearer {bearer}"\nheader = "Accept: {MANIFEST}"\n',
    )
    match = re.search(r"(?im)^docker-content-digest: (\S+)", out)
    return match.group(1) if match else ""


@pytest.fixture(scope="module")
def accounts(registry: Lab) -> Lab:
    """A pull-only user, a team-a pusher and an admin; client1 and client2 trust the CA."""
    for name, role, repos in ((PULLER, "pull", "*"), (PUSHER, "push", "team-a/*"),
                              (ADMIN, "admin", "*")):  # fmt: skip
        must(fab(registry, "adduser", "--username", name, "--password-stdin",
                 "--role", role, "--repos", repos, stdin=SECRET[name] + "\n"))  # fmt: skip
    for alias in ("client1", "client2"):
        conn = registry.connect(alias)
        trust_by_certs_d(registry, conn)
        docker_login(conn, USER, PASSWORD)
    return registry


def test_users_shows_roles_and_patterns(accounts: Lab) -> None:
    out = must(fab(accounts, "users"))
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows[PULLER][1:4] == ["user", "pull", "*"]
    assert rows[PUSHER][1:4] == ["user", "push", "team-a/*"]
    assert rows[ADMIN][1:4] == ["user", "admin", "*"]
    assert rows[USER][1:4] == ["user", "push", "*"]  # added before roles: push on everything
    assert "[regbox] password and rights files: ok (same as local)" in out


def test_a_pull_user_pulls_and_cannot_push_or_delete(accounts: Lab) -> None:
    c1, c2 = accounts.connect("client1"), accounts.connect("client2")
    ref = f"{DOMAIN}/shared/base:{uuid.uuid4().hex[:8]}"
    build(c1, ref)
    assert push(c1, USER, ref)[0] == 0
    docker_login(c2, PULLER, SECRET[PULLER])
    code, out = pull(c2, PULLER, ref)
    assert code == 0, out
    mine = f"{DOMAIN}/shared/base:puller-{uuid.uuid4().hex[:6]}"
    sh(c2, f"docker tag {ref} {mine}")
    code, out = push(c2, PULLER, mine)
    assert code != 0 and "denied" in out, out
    repo, tag = "shared/base", ref.rsplit(":", 1)[1]
    digest = manifest_digest(c1, repo, tag)
    bearer = token(c2, PULLER, SECRET[PULLER], f"repository:{repo}:pull,delete")
    status, body = api(c2, "DELETE", f"/v2/{repo}/manifests/{digest}", bearer)
    assert status == "401" and "UNAUTHORIZED" in body
    assert manifest_digest(c1, repo, tag) == digest


def test_a_team_pusher_stays_inside_its_patterns(accounts: Lab) -> None:
    c1, c2 = accounts.connect("client1"), accounts.connect("client2")
    docker_login(c2, PUSHER, SECRET[PUSHER])
    mine = f"{DOMAIN}/team-a/app:{uuid.uuid4().hex[:8]}"
    build(c2, mine)
    code, out = push(c2, PUSHER, mine)
    assert code == 0, out
    theirs = f"{DOMAIN}/team-b/app:{uuid.uuid4().hex[:8]}"
    build(c1, theirs)
    assert push(c1, USER, theirs)[0] == 0
    sh(c2, f"docker tag {mine} {theirs}-by-a")
    code, out = push(c2, PUSHER, f"{theirs}-by-a")
    assert code != 0 and "denied" in out, out
    code, out = pull(c2, PUSHER, theirs)
    assert code != 0 and "denied" in out, out
    # A blob of team-b cannot be mounted into team-a: the token lacks team-b pull.
    blob = json.loads(
        api(
            c1,
            "GET",
            f"/v2/team-b/app/manifests/{theirs.rsplit(':', 1)[1]}",
            token(c1, USER, PASSWORD, "repository:team-b/app:pull"),
            MANIFEST,
        )[1]
    )["layers"][0]["digest"]
    bearer = token(
        c2, PUSHER, SECRET[PUSHER], "repository:team-a/app:pull,push", "repository:team-b/app:pull"
    )
    status, _ = api(
        c2, "POST", f"/v2/team-a/app/blobs/uploads/?mount={blob}&from=team-b/app", bearer
    )
    assert status != "201"
    check = token(c2, PUSHER, SECRET[PUSHER], "repository:team-a/app:pull")
    assert api(c2, "HEAD", f"/v2/team-a/app/blobs/{blob}", check)[0] == "404"


def test_only_an_admin_deletes_a_manifest(accounts: Lab) -> None:
    c1 = accounts.connect("client1")
    ref = f"{DOMAIN}/team-a/old:{uuid.uuid4().hex[:8]}"
    build(c1, ref)
    assert push(c1, USER, ref)[0] == 0
    repo, tag = "team-a/old", ref.rsplit(":", 1)[1]
    digest = manifest_digest(c1, repo, tag)
    scope = f"repository:{repo}:pull,push,delete"
    denied = api(c1, "DELETE", f"/v2/{repo}/manifests/{digest}",
                 token(c1, PUSHER, SECRET[PUSHER], scope))  # fmt: skip
    assert denied[0] == "401"
    assert manifest_digest(c1, repo, tag) == digest
    deleted = api(c1, "DELETE", f"/v2/{repo}/manifests/{digest}",
                  token(c1, ADMIN, SECRET[ADMIN], scope))  # fmt: skip
    assert deleted[0] == "202"
    assert manifest_digest(c1, repo, tag) == ""


def test_a_robot_pushes_with_its_printed_token_which_is_shown_once(accounts: Lab) -> None:
    with watch_processes(accounts, "regbox") as seen:
        out = must(fab(accounts, "adduser", "--robot", "ci-team-a", "--role", "push",
                       "--repos", "team-a/*"))  # fmt: skip
    lines = [line for line in out.splitlines() if "token (shown once" in line]
    assert len(lines) == 1
    robot_token = lines[0].rsplit(" ", 1)[1]
    assert len(robot_token) >= 43  # 256 bits, URL-safe base64
    assert out.count(robot_token) == 1
    # Never in argv, here or on the host, while adduser made it and proved its login.
    assert "adduser" in seen["local"] and "--cacert /etc/regkit/ca.crt" in seen["remote"]
    assert robot_token not in seen["local"] and robot_token not in seen["remote"]
    c2 = accounts.connect("client2")
    regbox = accounts.connect("regbox")
    docker_login(c2, "ci-team-a", robot_token)
    ref = f"{DOMAIN}/team-a/built-by-ci:{uuid.uuid4().hex[:8]}"
    build(c2, ref)
    assert push(c2, "ci-team-a", ref)[0] == 0
    assert push(c2, "ci-team-a", ref.replace("team-a/", "team-b/"))[0] != 0
    # Only its bcrypt hash is on the host, and nothing there holds the token itself.
    entry = sh(regbox, "grep '^ci-team-a:' /etc/regkit/auth/htpasswd")
    assert entry.startswith("ci-team-a:$2y$05$")
    assert sh(regbox, f"grep -rlF -e '{robot_token}' /etc/regkit /var/lib/regkit || true") == ""
    users = must(fab(accounts, "users"))
    assert re.search(r"^ci-team-a\s+robot\s+push\s+team-a/\*", users, re.M)
    assert robot_token not in users
    # With --token-file the token goes to the file only.
    path = accounts.inventory.state_path.parent / "ci-token"
    again = must(fab(accounts, "adduser", "--robot", "ci-team-a", "--token-file", str(path)))
    renewed = path.read_text().strip()
    assert renewed != robot_token and renewed not in again
    assert path.stat().st_mode & 0o777 == 0o600
    assert re.search(r"^ci-team-a\s+robot\s+push\s+team-a/\*", must(fab(accounts, "users")), re.M)


def forged(accounts: Lab, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, **claims):
    now = int(dt.datetime.now(dt.UTC).timestamp())
    body = {
        "iss": signing.ISSUER,
        "sub": USER,
        "aud": DOMAIN,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": secrets.token_hex(8),
        "access": [{"type": "registry", "name": "catalog", "actions": ["*"]}],
        **claims,
    }
    x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    return jwt.encode(body, key, algorithm="ES256", headers={"x5c": x5c})


def test_the_registry_refuses_every_token_it_should(accounts: Lab) -> None:
    c1 = accounts.connect("client1")
    key_pem, cert_pem = signing.material(accounts.inventory)
    key = serialization.load_pem_private_key(key_pem, password=None)
    cert = x509.load_pem_x509_certificate(cert_pem)
    now = int(dt.datetime.now(dt.UTC).timestamp())
    assert api(c1, "GET", "/v2/_catalog", forged(accounts, key, cert))[0] == "200"
    other = ec.generate_private_key(ec.SECP256R1())
    refused = {
        "another key": forged(accounts, other, signing.build_cert(other, DOMAIN)),
        "another key, our certificate": forged(accounts, other, cert),
        "expired": forged(accounts, key, cert, exp=now - 60, nbf=now - 400, iat=now - 400),
        "another service": forged(accounts, key, cert, aud="other.lab.test"),
        "another issuer": forged(accounts, key, cert, iss="someone else"),
        "scopes short of the request": forged(
            accounts, key, cert, access=[{"type": "repository", "name": "x", "actions": ["pull"]}]
        ),
    }
    for why, bad in refused.items():
        status, _ = api(c1, "GET", "/v2/_catalog", bad)
        assert status == "401", why


def test_a_wrong_password_looks_the_same_for_every_user(accounts: Lab) -> None:
    c1 = accounts.connect("client1")
    replies = set()
    for name in (USER, "norights", "nobody"):
        out = sh(
            c1,
            f"curl -s -D - -K - --cacert {CA_FILE} '{URL}/auth/token?service={DOMAIN}' "
            "| tr -d '\\r' | grep -v -i '^date:'",
            f'user = "{name}:wrong-password-123"\n',
        )
        replies.add(out)
    assert len(replies) == 1
    assert next(iter(replies)).startswith("HTTP/1.1 401")


def password_checks(accounts: Lab) -> int:
    """How many logins nginx has checked at /auth/token so far (its access log)."""
    out = sh(
        accounts.connect("regbox"),
        "docker logs regkit-nginx 2>/dev/null | grep -c 'GET /auth/token' || true",
    )
    return int(out or 0)


def test_forty_api_calls_in_one_session_cost_at_most_two_password_checks(accounts: Lab) -> None:
    c1 = accounts.connect("client1")
    before = password_checks(accounts)
    bearer = token(c1, ADMIN, SECRET[ADMIN], "registry:catalog:*")
    script = (
        f"for i in $(seq 40); do curl -s -o /dev/null -w '%{{http_code}}\\n' -K /tmp/bearer "
        f"--cacert {CA_FILE} '{URL}/v2/_catalog'; done; rm -f /tmp/bearer"
    )
    sh(c1, "umask 077; cat > /tmp/bearer", f'header = "Authorization: Bearer {bearer}"\n')
    codes = sh(c1, script).split()
    assert codes == ["200"] * 40
    assert password_checks(accounts) - before <= 2


def test_setrole_during_a_long_pull_changes_rights_live(accounts: Lab) -> None:
    c1, c2 = accounts.connect("client1"), accounts.connect("client2")
    ref = f"{DOMAIN}/team-c/big:{uuid.uuid4().hex[:8]}"
    sh(
        c1,
        "d=$(mktemp -d) && head -c 256M /dev/urandom > $d/blob && "
        "printf 'FROM scratch\\nCOPY blob /blob\\n' > $d/Dockerfile && "
        f"docker build -q -t {ref} $d >/dev/null && rm -rf $d",
    )
    assert push(c1, USER, ref)[0] == 0
    must(fab(accounts, "setrole", PULLER, "--role", "pull", "--repos", "team-c/*"))
    regbox = accounts.connect("regbox")
    ids = sh(regbox, "docker ps -q --no-trunc | sort")
    result: dict[str, tuple[int, str]] = {}
    puller = threading.Thread(target=lambda: result.update(pull=pull(c2, PULLER, ref)), daemon=True)
    # regbox sends at 200 Mbit/s for the while: the pull takes about ten seconds.
    sh(regbox, "tc qdisc replace dev eth0 root tbf rate 200mbit burst 256kb latency 100ms")
    try:
        puller.start()
        puller.join(timeout=2)
        assert puller.is_alive(), f"the pull ended before setrole: {result}"
        out = must(fab(accounts, "setrole", PULLER, "--role", "pull", "--repos", "shared/*"))
        assert "[regbox] rights: changed" in out
        assert puller.is_alive(), "the pull ended before setrole did"
        puller.join(timeout=300)
    finally:
        sh(regbox, "tc qdisc del dev eth0 root")
    assert result["pull"][0] == 0, result["pull"][1]
    assert sh(regbox, "docker ps -q --no-trunc | sort") == ids
    code, out = pull(c2, PULLER, ref)
    assert code != 0 and "denied" in out, out


def test_account_changes_skip_a_host_never_deployed(accounts: Lab) -> None:
    """client1 has never run the registry: adduser there is a note, not a failure."""
    out = must(fab(accounts, "-H", "client1", "adduser", "--force", "--username", "newbie",
                   "--password-stdin", stdin="newbie-Lab-pass-1\n"))  # fmt: skip
    assert (
        "[client1] password and rights files: skipped "
        "(never deployed here: goes live with the first deploy)"
    ) in out
    assert "login check" not in out
    gone = must(fab(accounts, "deluser", "newbie", "--yes"))
    assert "[regbox] newbie removed: ok" in gone


def test_the_token_service_runs_unprivileged_with_its_key_mounted(accounts: Lab) -> None:
    regbox = accounts.connect("regbox")
    assert sh(regbox, "stat -c '%a %u %g' /etc/regkit/token/token.key") == "600 4431 4431"
    assert sh(regbox, "stat -c '%a %u %g' /etc/regkit/rights/rights.json") == "640 0 4431"
    fields = (
        "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} "
        "{{.HostConfig.RestartPolicy.Name}} {{.State.Health.Status}} "
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}"
    )
    assert sh(regbox, f"docker inspect --format '{fields}' regkit-token").split() == [
        "4431:4431", "true", "[ALL]", "unless-stopped", "healthy", "regkit-backend",
    ]  # fmt: skip
    # The key is in no image layer: only code is.
    image = sh(regbox, "docker inspect --format '{{.Config.Image}}' regkit-token")
    history = sh(regbox, f"docker history --no-trunc --format '{{{{.CreatedBy}}}}' {image}")
    assert "token.key" not in history and "PRIVATE" not in history
    key = signing.key_path(accounts.inventory).read_text()
    body = key.split("-----")[2].strip().splitlines()[0]
    assert (
        sh(regbox, f"docker exec regkit-token grep -rl -e '{body}' /app /usr 2>/dev/null || true")
        == ""
    )


def test_rights_declared_in_the_inventory_are_applied_by_deploy(accounts: Lab) -> None:
    data = yaml.safe_load(accounts.inventory_path.read_text())
    # Unlike anything setrole gave this user in the tests before.
    data.setdefault("users", {})["access"] = {PULLER: {"role": "pull", "repos": ["declared/*"]}}
    # Beside the lab's inventory, so that its relative paths (state, keys) still hold.
    path = accounts.inventory_path.with_name("inventory-access.yaml")
    path.write_text(yaml.safe_dump(data))
    declared = {ENV_VAR: str(path)}
    try:
        out = must(fab(accounts, "-H", "regbox", "deploy", env=declared))
        assert "[regbox] file /etc/regkit/rights/rights.json: changed" in out
        regbox = accounts.connect("regbox")
        on_host = json.loads(sh(regbox, "cat /etc/regkit/rights/rights.json"))["users"]
        assert on_host[PULLER] == {"role": "pull", "repos": ["declared/*"]}
        refused = fab(accounts, "setrole", PULLER, "--role", "admin", env=declared)
        assert refused.returncode == 1
        assert f"users.access.{PULLER} declares this user's rights" in refused.stderr
        users = must(fab(accounts, "users", env=declared))
        row = rf"^{PULLER}\s+user\s+pull\s+declared/\*\s+bcrypt\s+inventory$"
        assert re.search(row, users, re.M)
    finally:
        path.unlink()
    back = must(fab(accounts, "-H", "regbox", "deploy"))
    assert "[regbox] file /etc/regkit/rights/rights.json: changed" in back
