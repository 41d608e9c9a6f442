"""The commands regkit runs on a host, built as strings: pure, and tested as exact strings.

Every argument goes through ``shlex.quote``. Anything longer than a line or two is
a shell script under ``templates/sh/`` (see :mod:`tasks.scripts`).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from tasks.layout import MAINTENANCE_DIR, NGINX
from tasks.wanted import RunSpec, nginx_mounts


def join(*argv: str) -> str:
    """One shell command line from its arguments, each quoted."""
    return " ".join(shlex.quote(a) for a in argv)


def docker_start(spec: RunSpec) -> str:
    """Start the container ``spec`` describes: ``docker run``, or ``docker create``,
    ``network connect`` and ``start`` when it joins more than one network."""
    container = ("--name", spec.name, *spec.label, *spec.args, spec.image, *spec.command)
    if not spec.more_networks:
        return join("docker", "run", "-d", *container)
    steps = [join("docker", "create", *container)]
    steps += [join("docker", "network", "connect", net, spec.name) for net in spec.more_networks]
    steps.append(join("docker", "start", spec.name))
    return " && ".join(steps)


def network_create(name: str, options: Iterable[str] = ()) -> str:
    return join("docker", "network", "create", *options, name) + " >/dev/null"


def image_pull(ref: str) -> str:
    return f"{join('docker', 'pull', '-q', ref)} >/dev/null"


# An image's ID, size in bytes and layers' digests (a JSON list), on one line.
IMAGE_FOUND = "{{.Id}} {{.Size}} {{json .RootFS.Layers}}"


def image_found(ref: str) -> str:
    """``<ID> <size> <layers>`` of the image ``ref`` (see IMAGE_FOUND)."""
    return join("docker", "image", "inspect", "--format", IMAGE_FOUND, ref)


def image_save(ref: str) -> str:
    return join("docker", "save", ref)


def image_load() -> str:
    """Load the image archive on stdin, quietly."""
    return join("docker", "load", "-q")


def image_build(tag: str, context: str) -> str:
    return join("docker", "build", "-t", tag, context)


def nginx_test(tag: str) -> str:
    """``nginx -t`` in a throwaway container of ``tag`` with the live secrets mounted
    (nginx looks its upstreams up per request, so nothing else needs to run)."""
    return join("docker", "run", "--rm", *nginx_mounts(), tag, "nginx", "-t")


def nginx_reload() -> str:
    """Test the running proxy's configuration, then reload it: no restart, no dropped request."""
    return f"{join('docker', 'exec', NGINX, 'nginx', '-t')} 2>&1 && " + join(
        "docker", "exec", NGINX, "nginx", "-s", "reload"
    )


def maintenance_flag(name: str, on: bool) -> str:
    """Raise (or lower) the flag that has nginx answer writes with "read-only while ..."
    (layout.MAINTENANCE)."""
    flag = f"{MAINTENANCE_DIR}/{name}"
    if on:
        return f"{join('mkdir', '-p', MAINTENANCE_DIR)} && {join('touch', flag)}"
    return join("rm", "-f", flag)


def apt_install(package: str) -> str:
    """Install ``package`` with apt, updating the package lists only if the first try fails."""
    install = join("apt-get", "install", "-y", "-q", "--no-install-recommends", package)
    return (
        "export DEBIAN_FRONTEND=noninteractive\n"
        f"{install} >/dev/null 2>&1 || "
        f"{{ apt-get update -q >/dev/null && {install} >/dev/null; }}"
    )


def remove_files(paths: Iterable[str], folders: Iterable[str]) -> str:
    """Remove ``paths``, then each of ``folders`` that this left empty."""
    return f"{join('rm', '-f', *paths)}\n{join('rmdir', *folders)} 2>/dev/null\ntrue"


def keep_previous(path: str, previous: str) -> str:
    """Copy ``path`` to ``previous`` before it is replaced (or clear ``previous``: none)."""
    copy, clear = join("cp", "-p", path, previous), join("rm", "-f", previous)
    return f"if [ -e {shlex.quote(path)} ]; then {copy}; else {clear}; fi"


def stage_config(path: str, folder: str) -> str:
    """Copy a registry config into the folder named after its digest (root, 0600)."""
    return f"{join('mkdir', '-p', folder)} && " + join(
        "install", "-o", "0", "-g", "0", "-m", "600", path, f"{folder}/config.yml"
    )


def read_file(path: str) -> str:
    return join("cat", path)


def blob_list(blobs: str) -> str:
    """``<size> sha256/<2>/<hex>/data`` for every blob under ``blobs`` (none if absent)."""
    return (
        f"cd {shlex.quote(blobs)} 2>/dev/null || exit 0; "
        "find sha256 -path '*/data' -type f -printf '%s %p\\n'"
    )


def tar_out(folder: str, *names: str) -> str:
    """A tar stream on stdout of ``names`` under ``folder``, or of the paths on stdin."""
    listed = join(*names) if names else "-T -"
    return f"cd {shlex.quote(folder)} && tar -cf - {listed}"


def tar_in(folder: str) -> str:
    """Unpack the tar stream on stdin into ``folder`` (made if missing), owners kept."""
    return f"mkdir -p {shlex.quote(folder)} && tar -x --same-owner -p -f - -C {shlex.quote(folder)}"
