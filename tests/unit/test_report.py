"""The output's small formatters (pure)."""

from __future__ import annotations

import pytest

from tasks import report


@pytest.mark.parametrize(
    ("size", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 * 1024**3, "3.0 GiB")]
)
def test_human_size(size: int, text: str) -> None:
    assert report.human_size(size) == text


def test_plural() -> None:
    assert report.plural(1, "tag") == "1 tag"
    assert report.plural(0, "tag") == "0 tags"
    assert report.plural(2, "repository", "repositories") == "2 repositories"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("linux/amd64", "linux/amd64"),
        ("über ✓ 日本", "über ✓ 日本"),
        ("amd64\x1b]0;pwned\x07", "amd64\\x1b]0;pwned\\x07"),  # sets the terminal's title
        ("x\r\x1b[2Kfake row", "x\\r\\x1b[2Kfake row"),  # rewrites the line
        ("a\nb\tc\x00d\x7f", "a\\nb\\tc\\x00d\\x7f"),
        ("\x85\x9b31m", "\\x85\\x9b31m"),  # C1: NEL, and CSI in one byte
        ("tag\u202egnp.exe", "tag\\u202egnp.exe"),  # a bidi override reverses what follows
        ("\u2066\u2069\u200f\u061c", "\\u2066\\u2069\\u200f\\u061c"),
    ],
)
def test_printable_shows_control_characters_as_escapes(text: str, shown: str) -> None:
    assert report.printable(text) == shown
