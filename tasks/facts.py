"""What facts scripts print: one ``key<TAB>value`` line per fact (see
``templates/sh/_facts.sh.j2``)."""

from __future__ import annotations

import json
from typing import Any


def parse_values(output: str) -> dict[str, str]:
    """The ``key<TAB>value`` lines a facts script printed, as a dict."""
    return dict(line.split("\t", 1) for line in output.splitlines() if "\t" in line)


def mapping(value: object) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (a damaged record reads as none)."""
    return value if isinstance(value, dict) else {}


def json_object(text: str) -> dict[str, Any]:
    """The JSON object in ``text``; an empty one if it is not one."""
    try:
        return mapping(json.loads(text))
    except ValueError:
        return {}
