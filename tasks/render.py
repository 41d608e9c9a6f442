"""Every config file, rendered from templates/ with jinja2 into a build folder per host.

``<state_dir>/build/<alias>/`` gets:

- ``nginx/Dockerfile``, ``nginx/nginx.conf``, ``nginx/registry.conf`` and
  ``nginx/ui/``: the proxy image's build context (configuration and the catalog
  page, no secrets);
- ``token/Dockerfile``, ``token/service.py``, ``token/requirements.txt``: the token
  service image's build context (its source from ``tokend/``, no secrets);
- ``registry/config.yml``: the registry's config, with its http secret (0600), and
  ``registry-readonly/config.yml``, the same in read-only mode (for ``fab gc``);
- ``mirror/config.yml``: with ``registry.mirror``, the mirror's config (0600).

Templates fail loudly: an undefined variable or a syntax error names the template
and the line.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import jinja2
from invoke import Collection, Context

from tasks import inventory, mirror, signing, state, storage
from tasks.cli import task
from tasks.errors import RegkitError
from tasks.inventory import Inventory
from tasks.layout import (
    MAINTENANCE,
    MIRROR_ALIAS,
    MIRROR_CLIENTS_CA,
    MIRROR_DEBUG,
    REGISTRY_ALIAS,
    TOKEND_UID,
)
from tasks.report import Report
from tasks.state import atomic_write, ensure_private_dir

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@dataclass(frozen=True)
class Layout:
    """Where things are as nginx sees them; the defaults are the container's view."""

    listen: str = "443"
    upstream: str = "registry:5000"
    mirror_listen: str = "5443"
    mirror_upstream: str = f"{MIRROR_ALIAS}:5000"
    tokend_upstream: str = "token:5001"
    resolver: str = "127.0.0.11"  # Docker's DNS on a user-defined network
    tls_dir: str = "/etc/nginx/regkit/tls"
    maintenance_dir: str = "/etc/nginx/regkit/maintenance"
    site_conf: str = "/etc/nginx/regkit/registry.conf"
    ui_dir: str = "/usr/share/regkit/ui"
    pid_file: str = "/run/nginx.pid"
    mime_types: str = "/etc/nginx/mime.types"
    access_log: str = "/dev/stdout"
    worker_user: str = "regkit-nginx"
    worker_group: str = "regkit-nginx"
    worker_gid: int = 4430


CONTAINER = Layout()


@dataclass(frozen=True)
class LoginLimit:
    """How many logins (bcrypt checks) nginx passes on per client address: ``rate``
    sustained, ``burst`` more at once (the first ``delay`` of them without waiting),
    ``connections`` open at once. At the default cost a check takes a core for about
    a quarter of a second, so once its burst is spent one address takes at most a
    quarter of a core (and the token service serves clients in turns)."""

    rate: str = "1r/s"
    burst: int = 20
    delay: int = 10
    connections: int = 20
    # Requests to the token service without a login (no check, a thread each).
    anonymous_rate: str = "20r/s"
    anonymous_burst: int = 100


LOGIN_LIMIT = LoginLimit()

# file in the build folder -> (template, mode)
FILES: dict[str, tuple[str, int]] = {
    "nginx/Dockerfile": ("Dockerfile.j2", 0o644),
    "nginx/nginx.conf": ("nginx.conf.j2", 0o644),
    "nginx/registry.conf": ("registry.conf.j2", 0o644),
    "token/Dockerfile": ("token/Dockerfile.j2", 0o644),
    "registry/config.yml": ("config.yml.j2", 0o600),
}

# The catalog page (templates/ui), copied as it is into the proxy's build context.
UI_FILES = ("index.html", "app.js", "style.css")
# The token service (tokend/), copied as it is into its image's build context.
TOKEND_SOURCE = Path(__file__).resolve().parent.parent / "tokend"
TOKEND_FILES = ("service.py", "requirements.txt")


class TemplateError(RegkitError):
    """A template could not be rendered."""


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - config files, not HTML
    )


def context(inv: Inventory, layout: Layout = CONTAINER) -> dict[str, object]:
    """Everything the templates may use."""
    reg = inv.registry
    names = [reg.domain, *[n for n in reg.extra_names if n != reg.domain]]
    return {
        "domain": reg.domain,
        "server_names": names,
        "realm": f"Registry {reg.domain}",
        "login_limit": asdict(LOGIN_LIMIT),
        "maintenance": MAINTENANCE,
        # What the registry's Location headers name: the host the client asked for,
        # with the published port unless it is HTTPS's own.
        "port_suffix": "" if reg.port == 443 else f":{reg.port}",
        "images": reg.images.model_dump(),
        "layout": asdict(layout),
        "http_secret": state.http_secret(inv.state_path),
        "readonly": False,
        # Token auth: the registry trusts tokens for this service, from this issuer.
        "token_service": reg.domain,
        "token_issuer": signing.ISSUER,
        "token_realm": f"{reg.url}/auth/token",
        "token_uid": TOKEND_UID,
        "token_cert": signing.fingerprint(inv),
        "s3": s3_settings(inv),
        "registry_alias": REGISTRY_ALIAS,
        "mirror": mirror_settings(inv),
    }


def mirror_settings(inv: Inventory) -> dict[str, object] | None:
    """The mirror's settings, the upstream's login included (from the local state), or
    None without ``registry.mirror``."""
    m = inv.registry.mirror
    if m is None:
        return None
    login = mirror.read_login(inv)
    ca = mirror.upstream_ca(inv)
    return {
        "upstream": m.upstream,
        "port": m.port,
        "alias": MIRROR_ALIAS,
        "debug": MIRROR_DEBUG,
        "username": login.username if login else "",
        "password": login.password if login else "",
        "ca_sha256": hashlib.sha256(ca).hexdigest() if ca else "",
        "clients_ca": MIRROR_CLIENTS_CA,
    }


def s3_settings(inv: Inventory) -> dict[str, object] | None:
    """The registry's S3 storage settings, keys included (from the local state), or None
    when it keeps its data on the host's disk."""
    s3 = inv.registry.storage.s3
    if s3 is None:
        return None
    keys = storage.read_keys(inv)
    return {
        "accesskey": keys.access_key,
        "secretkey": keys.secret_key,
        "region": s3.region,
        "regionendpoint": s3.endpoint,
        "bucket": s3.bucket,
        "rootdirectory": s3.root_directory,
        "secure": s3.https,
        "chunksize": s3.chunk_size,
        "redirect": s3.redirect,
        "ca_sha256": hashlib.sha256(ca).hexdigest() if (ca := storage.s3_ca(inv)) else "",
    }


def render(template: str, ctx: dict[str, object], env: jinja2.Environment | None = None) -> str:
    """Render one template, turning jinja2's errors into a one-line TemplateError."""
    try:
        return (env or environment()).get_template(template).render(ctx)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"templates/{exc.name or template}:{exc.lineno}: {exc.message}"
        ) from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"templates/{template}: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"templates/{exc.name}: template not found") from None


def render_all(inv: Inventory, layout: Layout = CONTAINER) -> dict[str, tuple[str, int]]:
    """Every file of the build folder: relative path -> (content, mode)."""
    ctx = context(inv, layout)
    files = {rel: (render(tpl, ctx), mode) for rel, (tpl, mode) in FILES.items()}
    files["registry-readonly/config.yml"] = (
        render("config.yml.j2", {**ctx, "readonly": True}),
        0o600,
    )
    if ctx["mirror"]:
        files["mirror/config.yml"] = (render("mirror.yml.j2", ctx), 0o600)
    for name in UI_FILES:
        files[f"nginx/ui/{name}"] = ((TEMPLATES / "ui" / name).read_text(), 0o644)
    for name in TOKEND_FILES:
        files[f"token/{name}"] = ((TOKEND_SOURCE / name).read_text(), 0o644)
    return files


def build_dir(inv: Inventory, alias: str) -> Path:
    return inv.state_path / "build" / alias


def write_build(inv: Inventory, alias: str, report: Report) -> Path:
    """Render every file for ``alias`` into its build folder, writing only what changed."""
    root = ensure_private_dir(build_dir(inv, alias))
    for rel, (content, mode) in render_all(inv).items():
        if atomic_write(root / rel, content, mode=mode):
            report.changed(alias, f"render {rel}")
        else:
            report.unchanged(alias, f"render {rel}")
    return root


@task(
    default=True,
    help={"host": "Render for this host alias only (default: every host with role registry)."},
)
def configs(c: Context, host: str = "") -> None:
    """Render nginx, Dockerfile and registry configs into the local build folder."""
    inv = inventory.load()
    aliases = [host] if host else inv.with_role("registry")
    if host:
        inv.host(host)
    if not aliases:
        raise RegkitError(
            f"{inv.source}: hosts: no host has role 'registry'; add one or pass --host"
        )
    report = Report()
    for alias in aliases:
        root = write_build(inv, alias, report)
        report.info(f"[{alias}] build folder: {root}")
    report.summary()


ns = Collection("render", configs)
