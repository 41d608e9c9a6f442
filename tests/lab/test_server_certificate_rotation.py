"""Day two: the server certificate rotates under load without a failed request; expiry warns."""

from __future__ import annotations

import threading

import yaml

from tests.lab.conftest import (
    CA_FILE,
    DOMAIN,
    PASSPHRASE,
    Lab,
    fab,
    invoke,
    must,
    served,
    sh,
    trust_by_certs_d,
)

STOP = "/tmp/regkit-loop-stop"


def nginx_id(lab: Lab) -> str:
    return sh(
        lab.connect("regbox"), "docker inspect --format '{{.Id}} {{.State.StartedAt}}' regkit-nginx"
    )


def test_server_certificate_rotates_under_a_request_loop(registry: Lab) -> None:
    c1 = registry.connect("client1")
    trust_by_certs_d(registry, c1)
    before, container = served(registry, "serial"), nginx_id(registry)
    codes: dict[str, str] = {}
    # Every request is a new TLS handshake through the proxy; bounded in count.
    loop = (
        f"rm -f {STOP}; i=0; while [ ! -f {STOP} ] && [ $i -lt 3000 ]; do "
        f"curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 5 --cacert {CA_FILE} "
        f"https://{DOMAIN}/_ping; i=$((i+1)); done"
    )
    requests = threading.Thread(
        target=lambda: codes.update(out=sh(registry.connect("client1"), loop))
    )
    requests.start()
    try:
        must(invoke("pki.renew", env={**registry.env, "REGISTRY_CA_PASSPHRASE": PASSPHRASE}))
        out = must(fab(registry, "-H", "regbox", "deploy"))
    finally:
        sh(registry.connect("client1"), f"touch {STOP}")
        requests.join(timeout=120)
    answers = codes["out"].split()
    assert len(answers) > 20, "the loop did not run during the rotation"
    assert set(answers) == {"200"}, f"{len(answers) - answers.count('200')} failed requests"
    assert "[regbox] nginx reload: changed (certificate changed)" in out
    assert served(registry, "serial") != before
    assert nginx_id(registry) == container


def test_check_expiry_fails_for_a_short_lived_certificate(registry: Lab) -> None:
    data = yaml.safe_load(registry.inventory_path.read_text())
    data["pki"] = {"server_days": 10}
    short = registry.inventory_path.with_name("inventory-short-cert.yaml")
    short.write_text(yaml.safe_dump(data))
    env = {**registry.env, "REGISTRY_CA_PASSPHRASE": PASSPHRASE}
    try:
        must(invoke("pki.renew", env={**env, "REGISTRY_INVENTORY": str(short)}))
        must(fab(registry, "-H", "regbox", "deploy"))
        out = fab(registry, "-H", "regbox", "check-expiry")
        assert out.returncode == 1
        assert (
            "[regbox] expiry: failed (the served certificate expires in 9 days (under 30)"
            in out.stdout
        )
        assert "WARNING: the served certificate expires in 9 days" in must(
            fab(registry, "-H", "regbox", "status")
        )
    finally:
        short.unlink()
        must(invoke("pki.renew", env=env))
        must(fab(registry, "-H", "regbox", "deploy"))
    assert "[regbox] expiry: ok" in must(fab(registry, "-H", "regbox", "check-expiry"))
