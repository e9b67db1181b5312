"""A service's ``/docs`` (Swagger UI) and ``/redoc`` pages work without the internet: every asset
they load is served by the service itself, and in a real browser with every other host cut off
Swagger UI renders the service's operations."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from servers import serve

from conftest import require
from edgeway.service import ServiceSettings, create_app

CHROMIUM = "/usr/bin/chromium"


class Note(BaseModel):
    text: str


def notes_app() -> FastAPI:
    app = create_app("notes", settings=ServiceSettings(), configure_logging=False, access_log=False)

    @app.get("/notes/{note_id}")
    async def get_note(note_id: int) -> Note:
        return Note(text=str(note_id))

    @app.post("/notes", status_code=201)
    async def add_note(note: Note) -> Note:
        return note

    @app.delete("/notes/{note_id}", status_code=204)
    async def delete_note(note_id: int) -> None:
        return None

    return app


class _Assets(HTMLParser):
    """The URLs a page loads: script src, link href, img src, and the spec URL it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src", "redoc": "spec-url"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


def _loaded_urls(html: str) -> list[str]:
    parser = _Assets()
    parser.feed(html)
    # Swagger UI is given its spec in the inline script: url: '/openapi.json'
    parser.urls += re.findall(r"""\burl:\s*['"]([^'"]+)['"]""", html)
    return parser.urls


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_load_every_asset_from_the_service_itself(page: str) -> None:
    async with serve(notes_app()) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.get(page)
        assert response.status_code == 200
        html = response.text
        urls = _loaded_urls(html)
        assert len(urls) >= 2, html  # the bundle and the spec at least
        external = [u for u in urls if re.match(r"(https?:)?//", u)]
        assert external == [], f"{page} loads from other hosts: {external}"
        assert not re.search(r"""(src|href)=["'](https?:)?//""", html)
        fetched = {u: await http.get(u) for u in urls}
    for asset, got in fetched.items():
        assert got.status_code == 200, asset
        assert len(got.content) > 0, asset
    scripts = [got for u, got in fetched.items() if u.endswith(".js")]
    assert scripts
    assert all("javascript" in got.headers["content-type"] for got in scripts)
    assert max(len(got.content) for got in scripts) > 500_000  # the real bundle, not a stub


@pytest.fixture
def docs_url() -> Iterator[str]:
    """The notes service on a port of its own, in a thread (the browser test is synchronous)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()
    found: list[str] = []

    async def run() -> None:
        async with serve(notes_app()) as url:
            found.append(url)
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    assert started.wait(30), "the notes service did not start"
    yield found[0]
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)
    loop.close()


def test_swagger_ui_renders_the_operations_in_chromium_with_every_other_host_cut_off(
    docs_url: str, tmp_path: Path
) -> None:
    require("chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    refused: list[str] = []

    def only_the_service(route: Any) -> None:
        if route.request.url.startswith(docs_url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.route("**/*", only_the_service)
            page.goto(docs_url + "/docs")
            operations = page.locator(".opblock")
            sync_api.expect(operations).to_have_count(3, timeout=20_000)
            summaries = sorted(
                " ".join(text.split()) for text in page.locator(".opblock-summary-path").all_inner_texts()
            )
            page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
        finally:
            browser.close()
    assert summaries == ["/notes", "/notes/{note_id}", "/notes/{note_id}"]
    assert refused == [], f"the page asked other hosts: {refused}"
    assert errors == []
    assert (tmp_path / "docs.png").stat().st_size > 10_000
