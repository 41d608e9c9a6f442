"""The task decorator every module uses, and the small prompts tasks share.

``task`` is :func:`invoke.task` with three additions: a :class:`~tasks.errors.RegkitError`
raised inside the task becomes :class:`invoke.Exit` with the error's message, so the
user sees one line and an exit code instead of a traceback (so does input that ends
where an answer was expected, and output piped into ``head`` ends quietly); ``role=`` marks a task
that acts on inventory hosts of that role (see :mod:`tasks.remote.fanout`); and
``--help`` after a task's name prints its help, where invoke would pass it to the task
as the value of a positional argument (pyinvoke/invoke#982, open).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import invoke

from tasks.errors import RegkitError

# The attribute that marks a task acting on inventory hosts: their role (read by
# tasks.remote.fanout's executor).
ROLE_ATTRIBUTE = "regkit_role"


def task(*args: Any, role: str | None = None, **kwargs: Any) -> Any:
    """Like :func:`invoke.task`, but expected errors exit cleanly; ``role`` marks a
    task that ``fab -H`` runs once for all its hosts."""

    def decorate(body: Callable[..., Any]) -> invoke.Task:
        @functools.wraps(body)
        def run(*a: Any, **kw: Any) -> Any:
            if HELP & {v for v in (*a[1:], *kw.values()) if isinstance(v, str)}:
                show_help(made.name)
            try:
                return body(*a, **kw)
            except RegkitError as exc:
                raise invoke.Exit(f"error: {exc}", code=exc.exit_code) from None
            except KeyboardInterrupt:
                raise invoke.Exit("interrupted", code=130) from None
            except EOFError:
                raise invoke.Exit(
                    "error: standard input ended where an answer was expected; run this at "
                    "a terminal, or give the task's option for scripts (see its --help)",
                    code=1,
                ) from None
            except BrokenPipeError:
                # Output piped into `head` that stopped reading: end quietly, as cat does.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise invoke.Exit(code=141) from None

        made = invoke.task(**kwargs)(run)
        if role is not None:
            setattr(made, ROLE_ATTRIBUTE, role)
        return made

    if len(args) == 1 and callable(args[0]) and not kwargs:
        return decorate(args[0])
    return decorate


HELP = {"--help", "-h"}


def show_help(name: str) -> None:
    """Run the same program again as ``<program> --help <task>``, which prints the task's
    help and exits 0: before the task does anything."""
    argv = sys.argv[1:]
    token = next((a for a in argv if a == name or a.endswith(f".{name}")), name)
    program = sys.orig_argv[: len(sys.orig_argv) - len(argv)]
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *program[1:], "--help", token])  # noqa: S606 - no shell wanted


# More than any secret regkit takes; standard input is read no further.
STDIN_LIMIT = 1024


def read_secret_stdin(what: str) -> str:
    """The secret on standard input (``--password-stdin``): one line, its newline not
    part of it. More lines are refused, not cut off at the first: a secret is never
    silently changed. At a terminal, the line typed."""
    data = sys.stdin.readline() if sys.stdin.isatty() else sys.stdin.read(STDIN_LIMIT + 1)
    option = f"--{what}-stdin"
    if not data:
        raise RegkitError(f"{option} given but standard input was empty")
    if len(data) > STDIN_LIMIT:
        raise RegkitError(
            f"{option}: standard input holds more than {STDIN_LIMIT} characters; "
            f"give the {what} alone on one line"
        )
    line = data.removesuffix("\n").removesuffix("\r")
    if "\n" in line or "\r" in line:
        raise RegkitError(
            f"{option}: standard input holds more than one line; give the {what} "
            "alone on one line (a final newline is fine)"
        )
    return line


NEEDS_YES = "confirmation needed: add --yes when not at a terminal"


def confirm(
    question: str, not_at_terminal: str = NEEDS_YES, refused: str = "nothing was changed"
) -> None:
    """Ask ``question`` (y/N) at a terminal; raise ``not_at_terminal`` elsewhere (where
    the task's --yes is the way), and "not confirmed; ``refused``" on any other answer."""
    if not sys.stdin.isatty():
        raise RegkitError(not_at_terminal)
    if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise RegkitError(f"not confirmed; {refused}")
