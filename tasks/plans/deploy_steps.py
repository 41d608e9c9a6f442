"""A deploy plan as the ordered steps the apply step takes, each with its command.

:mod:`tasks.plans.deploy` decides what changes; this module says how each change
is carried out: the command (built by :mod:`tasks.commands`) or the script (a
template in ``templates/sh/``) of every step, in order. Pure; unit-tested.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tasks import commands, scripts, users
from tasks.inventory import Inventory
from tasks.layout import (
    CA_FILE,
    DEPLOYED,
    HOSTS_FILE,
    MIRROR,
    MIRROR_CLIENTS_CA,
    MIRROR_PROBE_CERT,
    MIRROR_PROBE_KEY,
    NGINX_CONTEXT_DIR,
    PROBE_PASSWORD_FILE,
    PROBE_REPO,
    SELF_NAME_MARK,
    TLS_DIR,
    TOKEND_CONTEXT_DIR,
    config_dir,
)
from tasks.plans.deploy import NETWORK_OPTIONS, DeployPlan
from tasks.remote.upload import Upload
from tasks.wanted import RunSpec


@dataclass(frozen=True)
class Step:
    """One step of a plan, as the report shows it and the apply step carries it out.

    ``why`` is empty when the step changes nothing (``unchanged`` then says why not).
    ``kind`` says how it is carried out: ``run`` (``command`` as root), ``build``
    (the same, its output streamed), ``upload`` (``uploads``), ``check`` (a command
    whose output lines are "ok" lines), ``ship`` (the image ``command`` names, carried
    over SSH).
    """

    subject: str
    why: str = ""
    unchanged: str = ""
    kind: str = "run"
    command: str = ""
    uploads: tuple[Upload, ...] = ()
    skipped: bool = False
    # What the step is called in an error ("building regkit-nginx:…"); ``failure``, if
    # set, replaces the whole error, followed by the command's error output.
    what: str = ""
    failure: str = ""
    # Lines to report instead of one for the step: (subject, why) each.
    details: tuple[tuple[str, str], ...] = ()


def steps(inv: Inventory, plan: DeployPlan) -> list[Step]:
    """The plan as the ordered steps the apply step takes."""
    out = [*_image_steps(plan), _package_step(plan), _files_step(plan)]
    if plan.stage:
        stage = " && ".join(
            commands.stage_config(path, config_dir(name)) for path, name in plan.stage
        )
        why = "staged by digest, so rollback can return to them"
        out.append(Step("legacy registry configs", why, command=stage, what="staging configs"))
    if plan.build:
        build = commands.image_build(plan.build, NGINX_CONTEXT_DIR)
        what = f"building {plan.build}"
        out.append(Step(f"image {plan.build}", "built", kind="build", command=build, what=what))
    else:
        tag = plan.nginx.spec.image
        out.append(Step(f"image {tag}", unchanged="build context unchanged"))
    if plan.test_nginx:
        tag = plan.nginx.spec.image
        failure = f"nginx -t failed in the new image {tag}; nothing running was changed"
        test = commands.nginx_test(tag)
        valid = "new configuration is valid"
        out.append(Step("nginx -t", unchanged=valid, kind="check", command=test, failure=failure))
    if plan.build_token:
        build = commands.image_build(plan.build_token, TOKEND_CONTEXT_DIR)
        what = f"building {plan.build_token}"
        step = Step(f"image {plan.build_token}", "built", kind="build", command=build, what=what)
        out.append(step)
    else:
        out.append(Step(f"image {plan.token.spec.image}", unchanged="build context unchanged"))
    for name in NETWORK_OPTIONS:
        options = NETWORK_OPTIONS[name]
        why = ""
        if name in plan.create_networks:
            why = "created (internal)" if options else "created"
        create = commands.network_create(name, options)
        out.append(Step(f"network {name}", why, command=create, what=f"creating network {name}"))
    out += _container_steps(plan)
    if plan.reload:
        reload = commands.nginx_reload()
        out.append(
            Step("nginx reload", ", ".join(plan.reload), command=reload, what="reloading nginx")
        )
    out.append(
        Step(
            f"name {inv.registry.domain}",
            f"127.0.0.1 in {HOSTS_FILE}: this host's proof and pulls reach its own proxy"
            if plan.self_name
            else "",
            unchanged=f"127.0.0.1 in {HOSTS_FILE} (this host's own proxy)",
            command=self_name_script(plan.self_name),
            what=f"naming this host in {HOSTS_FILE}",
        )
    )
    if plan.clear_flags:
        why = "lowered: a gc or migration that did not finish left it, and nginx refused pushes"
        lower = commands.join("rm", "-f", *plan.clear_flags)
        out.append(Step("maintenance flag", why, command=lower, what="lowering nginx's flag"))
    proof = verify_script(inv, plan.probe_tag, full=plan.changes)
    what = "verifying the registry" + (" (push/pull)" if plan.changes else "")
    out.append(Step("verify", kind="check", command=proof, what=what))
    if inv.registry.mirror is not None:
        mirror = verify_mirror_script(inv)
        out.append(Step("verify mirror", kind="check", command=mirror, what="verifying the mirror"))
    if plan.record is not None:
        record = (json.dumps(plan.record, sort_keys=True) + "\n").encode()
        out.append(
            Step(
                "deploy record",
                f"{DEPLOYED} (rollback returns to the previous images)",
                kind="upload",
                uploads=(Upload(DEPLOYED, record),),
            )
        )
    if plan.prune:
        why = f"removed {len(plan.prune)} that neither runs nor a rollback would return to"
        prune = commands.join("rm", "-rf", *plan.prune)
        out.append(Step("old configs", why, command=prune, what="removing old configs"))
    return out


def _container_steps(plan: DeployPlan) -> list[Step]:
    """Start what must (re)start, the token service first (nginx resolves its name when
    it starts); remove a mirror the inventory no longer names."""
    out = [
        Step(
            f"container {container.spec.name}",
            container.why,
            unchanged="running, same image and configuration",
            command=replace_script(container.spec),
            what=f"starting {container.spec.name}",
        )
        for container in (plan.token, plan.registry, plan.mirror, plan.nginx)
        if container is not None
    ]
    if plan.remove_mirror:
        why = "removed with its client certificates: registry.mirror is not in the inventory"
        why += " (its cache stays on disk)"
        files = (MIRROR_PROBE_KEY, MIRROR_PROBE_CERT, f"{TLS_DIR}/{MIRROR_CLIENTS_CA}")
        remove = commands.join("docker", "rm", "-f", MIRROR) + " >/dev/null && "
        remove += commands.join("rm", "-f", *files)
        out.append(Step(f"container {MIRROR}", why, command=remove, what="removing the mirror"))
    return out


def _image_steps(plan: DeployPlan) -> list[Step]:
    """Pull (or ship) the pinned images the host lacks, before anything else changes."""
    out = []
    for ref in plan.pull:
        failure = (
            f"image {ref} is not on the host, and pulling it failed; if the host cannot reach "
            "its registry, deploy with --ship-images to carry it over SSH (from this machine's "
            "Docker, or --images-from HOST)"
        )
        pull = commands.image_pull(ref)
        out.append(
            Step(f"image {ref}", "pulled", command=pull, what=f"pulling {ref}", failure=failure)
        )
    out += [Step(f"image {ref}", "shipped over SSH", kind="ship", command=ref) for ref in plan.ship]
    return out


def _package_step(plan: DeployPlan) -> Step:
    if plan.package == "no apt":
        return Step("apache2-utils", "no apt on this host; htpasswd not installed", skipped=True)
    if plan.package.startswith("unreachable "):
        why = (
            f"apt cannot reach its source ({plan.package.split(' ', 1)[1]}); not installed. "
            "Nothing regkit runs needs it (htpasswd for checking passwords by hand): install "
            "it when the host has a package source"
        )
        return Step("apache2-utils", why, skipped=True)
    why = "installed with apt" if plan.package == "install" else ""
    install = commands.apt_install("apache2-utils")
    return Step(
        "apache2-utils",
        why,
        unchanged="installed",
        command=install,
        what="installing apache2-utils with apt",
    )


def _files_step(plan: DeployPlan) -> Step:
    why = ", ".join(sorted({c.why for c in plan.files}))
    return Step(
        "files",
        why,
        unchanged=f"all {plan.file_count} match (sha256, mode, owner)",
        kind="upload",
        uploads=tuple(c.upload for c in plan.files),
        details=tuple((f"file {c.upload.path}", c.why) for c in plan.files),
    )


def replace_script(spec: RunSpec) -> str:
    """Swap a container, keeping the old one until the new one runs; roll back on failure."""
    return scripts.script(
        "replace-container",
        name=spec.name,
        start=commands.docker_start(spec),
        networks=spec.more_networks,
        state_format="{{.State.Running}} {{.RestartCount}}",
    )


def self_name_script(line: str) -> str:
    """Replace the host's regkit-marked line in /etc/hosts with ``line`` ("" removes it)."""
    return scripts.script("self-name", hosts=HOSTS_FILE, mark=SELF_NAME_MARK, line=line)


MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    )
)


def verify_mirror_script(inv: Inventory) -> str:
    """Prove the mirror from the host: 200 with the deploy's client certificate, 400
    without one, 405 to a push."""
    reg = inv.registry
    return scripts.script(
        "verify-mirror",
        url=reg.mirror_url,
        ca=CA_FILE,
        cert=MIRROR_PROBE_CERT,
        key=MIRROR_PROBE_KEY,
    )


def verify_script(inv: Inventory, tag: str, full: bool = True) -> str:
    """Prove the registry from the host: ping, 401 without and 200 with a token, push+pull.

    When nothing changed (``full=False``) the push+pull gives way to reading the
    probe image's manifest back with its digest; if that image is gone, it is
    pushed and pulled after all.
    """
    reg = inv.registry
    return scripts.script(
        "verify",
        full=full,
        address=reg.address,
        domain=reg.domain,
        url=reg.url,
        ref=f"{reg.address}/{PROBE_REPO}:{tag}",
        repo=PROBE_REPO,
        service=reg.domain,
        manifest_url=f"{reg.url}/v2/{PROBE_REPO}/manifests/{tag}",
        accept=MANIFEST_ACCEPT,
        ca=CA_FILE,
        user=users.PROBE_USER,
        password_file=PROBE_PASSWORD_FILE,
        digests_format="{{range .RepoDigests}}{{.}} {{end}}",
    )
