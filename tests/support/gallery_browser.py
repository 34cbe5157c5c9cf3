"""Drive the review page in a real headless Chromium (Debian package `chromium`) through Playwright.

Playwright (the `dev` extra) talks the DevTools protocol to the system browser: no browser is downloaded. Tests
that need the browser skip, with the reason, only where no Chromium is installed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

VIEWPORT = {"width": 1400, "height": 900}


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@contextmanager
def chromium() -> Iterator[Browser]:
    executable = find_chromium()
    if executable is None:
        pytest.skip("chromium not found on PATH; install it with `apt-get install -y chromium` to test the page")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Browser, index: Path, fragment: str = "", **context: Any) -> Page:
    """A fresh browser profile (empty localStorage) showing the page, once its script says it is ready; fails on
    any script error, whether the page caught it (#errors) or not."""
    page = browser.new_context(**{"viewport": VIEWPORT, "accept_downloads": True, **context}).new_page()
    return load(page, index, fragment)


def load(page: Page, index: Path, fragment: str = "") -> Page:
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(index.resolve().as_uri() + (f"#{fragment}" if fragment else ""))
    page.wait_for_selector("html[data-ready=true]", timeout=15000)
    errors = page.inner_text("#errors")
    assert not errors and not problems, f"the page reported script errors: {errors} {problems}"
    return page


def card_indices(page: Page) -> list[int]:
    """Card numbers (positions in data.js's columns) on the page, in display order."""
    return page.evaluate("Array.from(document.querySelectorAll('.card'), c => Number(c.dataset.index))")


def focused_index(page: Page) -> int:
    return page.evaluate("Number(document.querySelector('.card.focused').dataset.index)")


def decisions(page: Page) -> dict[int, str]:
    """Card number -> 'undecided' / 'accepted' / 'rejected' for the cards on the page."""
    return {int(k): v for k, v in page.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('.card'), c => [c.dataset.index, c.dataset.decision]))"
    ).items()}
