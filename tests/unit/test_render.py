"""Rendered configs: today's upstream recipe, no secrets in the image, loud template errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks import render
from tasks.inventory import Inventory
from tasks.report import Report


def rendered(inv: Inventory) -> dict[str, str]:
    return {rel: content for rel, (content, _mode) in render.render_all(inv).items()}


def test_site_follows_the_upstream_recipe(inv: Inventory) -> None:
    site = rendered(inv)["nginx/registry.conf"]
    for directive in [
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "map $upstream_http_docker_distribution_api_version $docker_distribution_api_version",
        "add_header Docker-Distribution-Api-Version $docker_distribution_api_version always;",
        "client_max_body_size 0;",
        "chunked_transfer_encoding on;",
        "proxy_request_buffering off;",
        "proxy_max_temp_file_size 0;",
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_read_timeout 900;",
        "location = /_ping",
        "server_name registry.unit.test registry alt.unit.test;",
    ]:
        assert directive in site, directive
    for stale in ["ssl on", "TLSv1.1", "TLSv1 ", "SSLv3", "/v1/"]:
        assert stale not in site, stale


def location(site: str, opening: str) -> str:
    """The body of the location block that starts with ``opening``."""
    body = site.split(opening, 1)[1]
    return body[: body.index("\n    }\n")]


def test_v2_is_checked_by_the_registry_and_passwords_only_by_the_token_service(
    inv: Inventory,
) -> None:
    site = rendered(inv)["nginx/registry.conf"]
    v2 = location(site, "location /v2/ {")
    # The registry checks the token: nginx neither asks for a password nor drops the
    # Authorization header there, and passes the registry's 401 and its challenge on
    # as they are (a token short of the scope: Docker prints "denied" from it).
    assert "auth_basic" not in v2 and 'Authorization ""' not in v2
    assert "error_page 401" not in site and "WWW-Authenticate" not in v2
    # nginx never runs bcrypt: no auth_basic anywhere; logins go to the token service,
    # rate-limited per client address.
    assert "auth_basic" not in site
    auth = location(site, "location ~ ^/auth/(token|catalog)$ {")
    for directive in [
        "limit_req zone=regkit_logins burst=20 delay=10;",
        "limit_conn regkit_login_conns 20;",
        "set $regkit_tokend token:5001;",
        "proxy_pass http://$regkit_tokend;",
        "proxy_set_header X-Real-IP $remote_addr;",
    ]:
        assert directive in auth, directive
    assert "limit_req_zone $regkit_login zone=regkit_logins:10m rate=1r/s;" in site
    for page in ("location = / {", "location /ui/ {", "location / {"):
        assert "auth_request /_regkit/login;" in location(site, page), page
    # Every way to the token service has the same limits; without a login, 20/s.
    for way in ("location ~ ^/auth/(token|catalog)$ {", "location = / {", "location /ui/ {"):
        for directive in [
            "limit_req zone=regkit_logins burst=20 delay=10;",
            "limit_req zone=regkit_tokend burst=100 nodelay;",
            "limit_conn regkit_login_conns 20;",
        ]:
            assert directive in location(site, way), (way, directive)
    assert "limit_req_zone $binary_remote_addr zone=regkit_tokend:10m rate=20r/s;" in site
    assert 'proxy_set_header X-Regkit-User "";' in auth


def test_registry_trusts_tokens_from_its_token_service(inv: Inventory) -> None:
    config = yaml.safe_load(rendered(inv)["registry/config.yml"])
    assert config["auth"] == {
        "token": {
            "realm": "https://registry.unit.test/auth/token",
            "service": "registry.unit.test",
            "issuer": "regkit token service",
            "rootcertbundle": "/etc/docker/registry/token.crt",
        }
    }


def test_token_image_bakes_in_code_only_and_runs_unprivileged(inv: Inventory) -> None:
    files = rendered(inv)
    dockerfile = files["token/Dockerfile"]
    assert "FROM python:3.12.8-slim-bookworm" in dockerfile
    copies = [line for line in dockerfile.splitlines() if line.startswith(("COPY", "ADD"))]
    assert copies == [
        "COPY requirements.txt /app/requirements.txt",
        "COPY service.py /app/service.py",
    ]
    assert "USER 4431:4431" in dockerfile
    assert "--require-hashes" in dockerfile
    assert files["token/service.py"] == (render.TOKEND_SOURCE / "service.py").read_text()


def test_dockerfile_bakes_in_no_secret(inv: Inventory) -> None:
    dockerfile = rendered(inv)["nginx/Dockerfile"]
    assert dockerfile.startswith("# The registry's nginx proxy.")
    assert "FROM nginx:1.27.3-bookworm" in dockerfile
    copies = [line for line in dockerfile.splitlines() if line.startswith(("COPY", "ADD"))]
    assert copies == [
        "COPY nginx.conf /etc/nginx/nginx.conf",
        "COPY registry.conf /etc/nginx/regkit/registry.conf",
        "COPY ui/ /usr/share/regkit/ui/",
    ]


def test_registry_config_has_a_stable_secret(inv: Inventory) -> None:
    first = yaml.safe_load(rendered(inv)["registry/config.yml"])
    second = yaml.safe_load(rendered(inv)["registry/config.yml"])
    assert len(first["http"]["secret"]) >= 32
    assert first["http"]["secret"] == second["http"]["secret"]
    assert first["storage"]["filesystem"]["rootdirectory"] == "/var/lib/registry"
    assert first["http"]["addr"] == ":5000"


def test_build_folder_is_written_once_then_unchanged(inv: Inventory) -> None:
    rep = Report()
    root = render.write_build(inv, "regbox", rep)
    assert rep.count("changed") == len(render.render_all(inv)) == 11
    assert (root / "registry/config.yml").stat().st_mode & 0o777 == 0o600
    assert root.stat().st_mode & 0o777 == 0o700
    again = Report()
    render.write_build(inv, "regbox", again)
    assert again.count("changed") == 0
    assert again.summary().endswith("no changes")


def test_undefined_variable_names_the_template() -> None:
    with pytest.raises(
        render.TemplateError, match=r"templates/registry.conf.j2: 'layout' is undefined"
    ):
        render.render("registry.conf.j2", {})


def test_syntax_error_names_template_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken.j2").write_text("ok\nok\n{% if %}\n")
    monkeypatch.setattr(render, "TEMPLATES", tmp_path)
    with pytest.raises(render.TemplateError, match=r"templates/broken.j2:3: "):
        render.render("broken.j2", {})
