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
