"""The catalog page in the ``browser`` fixture (see conftest): a logged-in page, and a
repository's tag table opened."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Browser, Locator, Page, Route

from tests.lab.conftest import PASSWORD, USER


def open_page(
    browser: Browser,
    routes: dict[str, Callable[[Route], None]] | None = None,
    login: tuple[str, str] = (USER, PASSWORD),
    width: int = 1400,
) -> Page:
    """A logged-in page (the TLS chain is checked by the other tests, not here)."""
    context = browser.new_context(
        http_credentials={"username": login[0], "password": login[1]},
        ignore_https_errors=True,
        viewport={"width": width, "height": 900},
    )
    page = context.new_page()
    for pattern, handler in (routes or {}).items():
        page.route(pattern, handler)
    return page


def expand(page: Page, repository: str) -> Locator:
    details = page.locator(f'details[data-repository="{repository}"]')
    details.wait_for(timeout=20000)
    if details.get_attribute("open") is None:
        details.locator("summary").click()
    return details
