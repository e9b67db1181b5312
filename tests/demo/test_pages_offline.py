"""Every page the demo serves works without the internet: each shop service's and the security
service's ``/docs`` and ``/redoc`` load their assets from the service itself, and the control
room's and the shop's own files name no other host (no CDN). The browser side of this, for one
kit service, is tests/service/test_docs_offline.py."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

import edgeway.demo.control
import edgeway.demo.shop.web
from edgeway.security_service import create_security_app
from edgeway.security_service.settings import SecuritySettings

SHOP_APPS = ("catalog", "inventory", "orders", "notifications", "payments", "profile", "legacy")
# A URL with a scheme or protocol-relative, in an attribute, a CSS url() or @import, or a JS
# string: what a browser would fetch from another host.
ELSEWHERE = re.compile(r"""(?:https?:)?//[\w.-]+\.[a-z]{2,}|["'(]\s*(?:https?:)?//""", re.IGNORECASE)


def _shop_app(name: str) -> Callable[[], FastAPI]:
    module = importlib.import_module(f"edgeway.demo.shop.{name}.app")
    factory: Callable[[], FastAPI] = module.create_app
    return factory


APPS: dict[str, Callable[[], FastAPI]] = {
    **{name: _shop_app(name) for name in SHOP_APPS},
    "security": lambda: create_security_app(SecuritySettings()),
}


@pytest.mark.parametrize("name", list(APPS))
async def test_each_service_s_docs_pages_load_their_assets_from_the_service(name: str) -> None:
    # The app is not started (no lifespan): the pages and their assets need no database.
    transport = httpx.ASGITransport(app=APPS[name]())
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
        for page in ("/docs", "/redoc"):
            answer = await http.get(page)
            assert answer.status_code == 200, (name, page)
            html = answer.text
            assets = re.findall(r"""(?:src|href|spec-url)=["']([^"']+)["']""", html)
            assert any(a.endswith(".js") for a in assets), (name, page, html)
            assert [a for a in assets if not a.startswith("/")] == [], (name, page)
            for asset in assets:
                got = await http.get(asset)
                assert got.status_code == 200, (name, page, asset)
                assert got.content, (name, page, asset)


@pytest.mark.parametrize("package", [edgeway.demo.control, edgeway.demo.shop.web], ids=["control", "shop"])
def test_the_demo_s_own_pages_name_no_other_host(package: object) -> None:
    static = Path(str(getattr(package, "__file__", ""))).with_name("static")
    files = [p for p in static.iterdir() if p.suffix in (".html", ".js", ".css")]
    assert {p.suffix for p in files} >= {".html", ".js", ".css"}
    for path in files:
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("//"))
        assert ELSEWHERE.findall(code) == [], path


def test_the_check_sees_a_cdn_in_each_form_it_could_take() -> None:
    for loaded in (
        '<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist/swagger-ui-bundle.js">',
        "<link href='//unpkg.com/chart.js'>",
        "@import url(https://fonts.googleapis.com/css2);",
        'import Chart from "https://esm.sh/chart.js";',
    ):
        assert ELSEWHERE.findall(loaded), loaded
    assert not ELSEWHERE.findall('fetch("/api/state"); const scheme = "wss";')
