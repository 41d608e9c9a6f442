"""What facts scripts print: one ``key<TAB>value`` line per fact (see
``templates/sh/_facts.sh.j2``)."""

from __future__ import annotations


def parse_values(output: str) -> dict[str, str]:
    """The ``key<TAB>value`` lines a facts script printed, as a dict."""
    return dict(line.split("\t", 1) for line in output.splitlines() if "\t" in line)
