"""The lab's own Docker engine: Debian's dockerd on the lab's socket, and its CLI."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from lab.settings import DOCKER_CLI, DOCKERD, LABEL, LabError, Settings
from tasks.report import Report


class Engine:
    """The lab's Docker engine, driven with Debian's docker CLI (same version as dockerd)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if not os.access(DOCKER_CLI, os.X_OK):
            raise LabError(
                f"{DOCKER_CLI} not found; install Debian's docker.io (apt-get install docker.io)"
            )

    def cmd(self, *args: str) -> list[str]:
        return [DOCKER_CLI, "--host", self.settings.socket, *args]

    def run(
        self, *args: str, stdin: str | bytes | None = None, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run a docker command; raise LabError with its stderr when it fails and ``check``."""
        data = stdin.encode() if isinstance(stdin, str) else stdin
        proc = subprocess.run(
            self.cmd(*args),
            input=data,
            capture_output=True,
            timeout=timeout,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
            check=False,
        )
        out = subprocess.CompletedProcess(
            proc.args,
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        if check and out.returncode != 0:
            what = " ".join(args[:3])
            raise LabError(f"docker {what} failed: {out.stderr.strip() or out.stdout.strip()}")
        return out

    def ok(self, *args: str, timeout: float = 60) -> bool:
        return self.run(*args, check=False, timeout=timeout).returncode == 0

    def answers(self) -> bool:
        try:
            return self.ok("version", "--format", "{{.Server.Version}}", timeout=10)
        except subprocess.TimeoutExpired:
            return False

    def exec(
        self, container: str, script: str, stdin: str | bytes | None = None, check: bool = True
    ) -> str:
        """Run ``sh -c script`` as root in ``container``; return its output."""
        flags = ["-i"] if stdin is not None else []
        return self.run(
            "exec", *flags, container, "sh", "-c", script, stdin=stdin, check=check
        ).stdout

    def image_id(self, ref: str) -> str | None:
        out = self.run("image", "inspect", "--format", "{{.Id}}", ref, check=False)
        return out.stdout.strip() if out.returncode == 0 else None

    def inspect(self, container: str) -> dict[str, Any] | None:
        out = self.run("container", "inspect", container, check=False)
        return json.loads(out.stdout)[0] if out.returncode == 0 else None

    def labelled(self, kind: str) -> list[str]:
        """Names of the lab's containers, volumes or networks (by the lab's label)."""
        fmt = "{{.Names}}" if kind == "container" else "{{.Name}}"
        args = [kind, "ls", "--filter", f"label={LABEL}", "--format", fmt]
        if kind == "container":
            args.insert(2, "--all")
        return sorted(self.run(*args).stdout.split())


def ensure_engine(settings: Settings, report: Report) -> Engine:
    """Use the lab's engine if it answers; otherwise start Debian's dockerd for it."""
    engine = Engine(settings)
    if engine.answers():
        report.unchanged("lab", "docker engine", f"answers on {settings.socket}")
        return engine
    if not os.access(DOCKERD, os.X_OK):
        raise LabError(
            f"{DOCKERD} not found; install Debian's docker.io (apt-get install docker.io)"
        )
    root, run_dir = Path(settings.root), Path(settings.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = root / "dockerd.log"
    argv = [
        DOCKERD,
        f"--data-root={root / 'docker'}",
        f"--exec-root={run_dir / 'exec'}",
        f"--pidfile={run_dir / 'docker.pid'}",
        f"--host={settings.socket}",
    ]
    with log_path.open("ab") as log:
        subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while not engine.answers():
        if time.monotonic() > deadline:
            raise LabError(
                f"dockerd did not answer on {settings.socket} within 60 s; see {log_path}"
            )
        time.sleep(0.5)
    report.changed(
        "lab", "docker engine", f"started dockerd on {settings.socket}, data in {root / 'docker'}"
    )
    return engine
