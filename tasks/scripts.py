"""Shell scripts run on hosts, rendered from ``templates/sh/`` with jinja2.

The same environment as the config files (undefined variables fail loudly), plus
a ``q`` filter that is ``shlex.quote``: every value that reaches a script goes
through it. The suite runs every rendered script through ``sh -n`` and shellcheck.
"""

from __future__ import annotations

import shlex
from functools import cache

import jinja2

from tasks import render


@cache
def environment() -> jinja2.Environment:
    env = render.environment()
    env.filters["q"] = lambda value: shlex.quote(str(value))
    return env


def script(template: str, /, **values: object) -> str:
    """``templates/sh/<template>.sh.j2`` rendered with ``values``."""
    return render.render(f"sh/{template}.sh.j2", values, environment())
