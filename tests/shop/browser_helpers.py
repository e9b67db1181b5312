"""The shop in a browser, for the browser test modules (each says ``pytest_plugins =
["browser_helpers"]``, so these fixtures are defined once): one running shop for all of them
(they share the xdist group ``shop-browser``, so they run on one worker and start it once),
Debian's Chromium through Playwright, screenshots kept under the run's temporary directory, and
signing in on the shop's page."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shop_system import Shop, running_shop

from conftest import require

__all__ = ["CHROMIUM", "Screenshots", "browser_shop", "page", "screenshots", "sign_in"]

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    require("chromium")
    with running_shop(tmp_path_factory.mktemp("shop-browser")) as system:
        yield system


@pytest.fixture
def page(browser_shop: Shop) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page
        browser.close()
        assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Screenshots:
    return Screenshots(tmp_path_factory.mktemp("screenshots", numbered=False))


class Screenshots:
    """PNGs of what the tests saw, under the run's temporary directory (listed in its
    ``index.txt``); with ``EDGEWAY_SCREENSHOTS=DIR`` copied there too."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.copy_to = (
            Path(os.environ["EDGEWAY_SCREENSHOTS"]) if os.environ.get("EDGEWAY_SCREENSHOTS") else None
        )

    def take(self, target: Any, name: str, **options: Any) -> Path:
        """``target`` is a page or a locator (then only that element)."""
        path = self.directory / f"{name}.png"
        target.screenshot(path=str(path), **options)
        with open(self.directory / "index.txt", "a") as index:
            index.write(f"{path}\n")
        if self.copy_to is not None:
            self.copy_to.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.copy_to / path.name)
        return path


def sign_in(page: Any, base: str, user: str = "alice", password: str = "alice-pass", then: str = "") -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/#/login?next={then}")
    page.get_by_test_id("username").fill(user)
    page.get_by_test_id("password").fill(password)
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("user")).to_have_text(f"signed in as {user}")
