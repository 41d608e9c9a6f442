"""Issue #22: what an attacker on the lab's network tried, shown against real hosts.

- a flood of wrong passwords does not slow other clients' pulls or ``/_ping``;
- a wrong password takes as long for a name that does not exist as for one that does;
- the CA is trusted for the registry's names only: a certificate for another name,
  signed with the CA's key, is refused by Docker (Go) and curl (OpenSSL) on a client
  that trusts the CA system-wide.

The flood is measured by bench/flood.py; its figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import ipaddress
import shlex
import statistics
import subprocess
import time

import pytest
from cryptography import x509

from bench import flood
from tasks import certificates, pki
from tests.lab.conftest import (
    CA_FILE,
    DOMAIN,
    PASSPHRASE,
    PASSWORD,
    USER,
    Lab,
    Pushed,
    fab,
    lab_ip,
    must,
    push_image,
    run_root,
    sh,
    target,
)

TOKEN_URL = f"https://{DOMAIN}/auth/token?service={DOMAIN}"


@pytest.fixture(scope="module")
def image(clients: Lab) -> Pushed:
    return push_image(clients.connect("client1"), repo="team/flood")


def test_a_login_flood_slows_neither_pulls_nor_ping(registry: Lab, image: Pushed) -> None:
    """Acceptance of #22.2: while client1 sends wrong passwords at 50 a second for 30 s,
    client2's ``docker pull`` (a login and a token each time) takes at most twice its
    quiet time and ``/_ping`` stays under 100 ms (bench/flood.py, also in the bench)."""
    inv = registry.inventory
    result = flood.measure(
        inv, target(registry, "client1"), target(registry, "client2"), USER, image.ref
    )
    print(result.line())
    assert result.sent == flood.RATE * flood.SECONDS
    assert result.sent / result.sending_s >= 0.9 * flood.RATE, "not sent at its rate"
    assert result.checked + result.limited == result.sent
    assert result.pull_ratio <= 2
    assert max(result.flood_ping) < 0.1


def test_a_wrong_password_takes_as_long_for_any_name(registry: Lab) -> None:
    """Acceptance of #22.3: 20 tries each, interleaved and paced under the login rate
    limit: the median for a name that does not exist, and for a robot (hashed at a low
    cost, as the deploy's probe is), differs from alice's (default cost) by under 10 %."""
    must(fab(registry, "adduser", "--robot", "timing-bot", "--role", "pull", "--repos", "x/*"))
    names = {USER: "alice", f"nobody-here-{int(time.time())}": "unknown", "timing-bot": "robot"}
    script = (
        f"for i in $(seq 20); do for u in {' '.join(names)}; do "
        f"printf '%s ' $u; curl -s -o /dev/null -w '%{{http_code}} %{{time_total}}\\n' "
        f"-u $u:wrong-password-1 --cacert {CA_FILE} {shlex.quote(TOKEN_URL)}; "
        "sleep 0.7; done; done"
    )
    try:
        times: dict[str, list[float]] = {}
        for line in sh(registry.connect("client2"), script).splitlines():
            user, status, took = line.split()
            assert status == "401", line
            times.setdefault(names[user], []).append(float(took))
    finally:
        must(fab(registry, "deluser", "timing-bot", "--yes"))
    medians = {who: statistics.median(took) for who, took in times.items()}
    print("wrong password, median of 20: "
          + ", ".join(f"{m * 1000:.0f} ms for {who}" for who, m in medians.items()))  # fmt: skip
    for who in ("unknown", "robot"):
        assert abs(medians[who] - medians["alice"]) / medians["alice"] < 0.10, who


def test_the_ca_is_trusted_for_the_registrys_names_only(registry: Lab) -> None:
    """Acceptance of #22.4 on client1, which trusts the CA system-wide (trust-ca): a
    registry serving a certificate for another name (rogue.lab.test, and regbox's
    address, which the lab's registry does not have), signed with the CA's key, is
    refused by Docker and by curl; the registry's own certificate is accepted."""
    inv = registry.inventory
    p = pki.paths(inv)
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(p.ca_cert)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "X509v3 Name Constraints: critical" in text
    assert text.split("Permitted:", 1)[1].split()[0] == f"DNS:{DOMAIN}"
    address = lab_ip("regbox")
    ca_key = pki.read_key(p.ca_key, PASSPHRASE)
    rogue_key = certificates.new_key("ec-p256")
    names = [x509.DNSName("rogue.lab.test"), x509.IPAddress(ipaddress.ip_address(address))]
    rogue = certificates.build_server_cert(pki.read_cert(p.ca_cert), ca_key, rogue_key, names, 30)
    must(fab(registry, "-H", "client1", "trust-ca"))
    regbox, c1 = registry.connect("regbox"), registry.connect("client1")
    pem = certificates.cert_pem(rogue).decode()
    sh(regbox, "mkdir -p /tmp/rogue && cat > /tmp/rogue/tls.crt", pem)
    sh(regbox, "cat > /tmp/rogue/tls.key", certificates.key_pem(rogue_key).decode())
    image = inv.registry.images.registry
    sh(
        regbox,
        "docker rm -f regkit-rogue >/dev/null 2>&1; docker run -d --name regkit-rogue "
        "-p 6443:5000 -v /tmp/rogue:/certs:ro -e REGISTRY_HTTP_TLS_CERTIFICATE=/certs/tls.crt "
        f"-e REGISTRY_HTTP_TLS_KEY=/certs/tls.key {image} >/dev/null",
    )
    hosts = f"{address} rogue.lab.test"
    try:
        sh(c1, f"echo '{hosts}' >> /etc/hosts")
        # Served for sure: the same URL with the server's certificate not checked.
        sh(c1, "for i in $(seq 30); do curl -sk -o /dev/null https://rogue.lab.test:6443/v2/ "
               "&& exit 0; sleep 1; done; exit 1")  # fmt: skip
        for url in ("https://rogue.lab.test:6443/v2/", f"https://{address}:6443/v2/"):
            status, out, err = run_root(c1, f"curl -sS -o /dev/null {url}")
            assert status != 0 and "subtree violation" in err, url + out + err
        # dockerd resolves names by DNS first, so it is given the address.
        status, out, err = run_root(c1, f"docker pull {address}:6443/any/image:1")
        assert status != 0
        assert "not authorized to sign for this name" in out + err, out + err
        # The registry's own certificate, from the same CA, through the same system trust.
        assert sh(c1, f"curl -sS --fail https://{DOMAIN}/_ping") == "ok"
        assert "Login Succeeded" in sh(
            c1, f"docker login -u {USER} --password-stdin {DOMAIN}", PASSWORD + "\n"
        )
    finally:
        sh(regbox, "docker rm -f regkit-rogue >/dev/null 2>&1; rm -rf /tmp/rogue")
        # /etc/hosts is a bind mount here: rewritten in place, not replaced.
        sh(c1, "grep -v rogue.lab.test /etc/hosts > /tmp/hosts; cat /tmp/hosts > /etc/hosts")
