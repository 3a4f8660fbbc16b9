"""HTML pages served through the gateway work as they do directly (real headless Chromium).

The upstream serves a page that loads its own script, stylesheet and image, a page that frames
it, and a page whose own CSP allows an inline script. Through the gateway, every one behaves
exactly as when loaded from the upstream directly; JSON answers keep the strict API policy.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.browser_support import browser
from tests.conftest import make_config
from tests.support import raw_request

INLINE_CSP = "default-src 'self'; script-src 'self' 'unsafe-inline'"


def png(width: int = 5, height: int = 3) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xc0\x20\x20" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>page</title>
<link rel="stylesheet" href="/site/site.css"><script defer src="/site/app.js"></script></head>
<body><p id="styled">styled</p><img id="logo" src="/site/logo.png" alt="logo"></body></html>"""
FRAME = """<!doctype html><html><head><meta charset="utf-8"></head>
<body><iframe id="f" src="/site/page.html"></iframe></body></html>"""
INLINE = """<!doctype html><html><head><meta charset="utf-8"></head>
<body><script>document.documentElement.dataset.marker = "inline-ran";</script></body></html>"""


def site_app() -> web.Application:
    files: dict[str, tuple[bytes, str, dict[str, str]]] = {
        "page.html": (PAGE.encode(), "text/html; charset=utf-8", {}),
        "frame.html": (FRAME.encode(), "text/html; charset=utf-8", {}),
        "inline.html": (INLINE.encode(), "text/html; charset=utf-8", {"Content-Security-Policy": INLINE_CSP}),
        "app.js": (b'document.documentElement.dataset.marker = "script-ran";', "text/javascript", {}),
        "site.css": (b"#styled { color: rgb(1, 2, 3); }", "text/css", {}),
        "logo.png": (png(), "image/png", {}),
    }

    async def serve(request: web.Request) -> web.Response:
        body, content_type, headers = files[request.match_info["name"]]
        return web.Response(body=body, headers={"Content-Type": content_type, **headers})

    async def data(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def favicon(request: web.Request) -> web.Response:
        return web.Response(body=png(), content_type="image/png")

    app = web.Application()
    app.router.add_get("/site/{name}", serve)
    app.router.add_get("/api/data", data)
    app.router.add_get("/favicon.ico", favicon)
    return app


OBSERVE = """
const img = document.getElementById('logo');
const styled = document.getElementById('styled');
const frame = document.getElementById('f');
const inner = frame && frame.contentDocument ? frame.contentDocument.documentElement : null;
return {
  marker: document.documentElement.dataset.marker || null,
  imageWidth: img ? img.naturalWidth : null,
  color: styled ? getComputedStyle(styled).color : null,
  framedMarker: inner ? (inner.dataset.marker || null) : null,
};
"""


@pytest.mark.slow
async def test_html_pages_work_through_the_gateway_as_directly(
    aiohttp_server: Any, make_gateway: Any, tmp_path: Path
) -> None:
    site = await aiohttp_server(site_app())
    gw = await make_gateway(make_config({"legacy": site, "candidate": site}))
    direct = str(site.make_url("")).rstrip("/")
    driver = await asyncio.to_thread(browser, tmp_path / "profile")

    def observe(base: str) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for page in ("page", "frame", "inline"):
            driver.get(f"{base}/site/{page}.html")
            seen[page] = driver.execute_script(OBSERVE)
        seen["console"] = [e["message"] for e in driver.get_log("browser")]
        return seen

    try:
        directly = await asyncio.to_thread(observe, direct)
        through = await asyncio.to_thread(observe, gw.url)
    finally:
        await asyncio.to_thread(driver.quit)
    expected_page = {"marker": "script-ran", "imageWidth": 5, "color": "rgb(1, 2, 3)", "framedMarker": None}
    assert directly["page"] == expected_page, directly
    assert directly["frame"]["framedMarker"] == "script-ran" and directly["inline"]["marker"] == "inline-ran"
    for page in ("page", "frame", "inline"):
        assert through[page] == directly[page], (page, through, directly)
    assert not [m for m in through["console"] if "Content Security Policy" in m or "Refused" in m], through["console"]

    # What the browser got: the same-origin default, the upstream's own CSP, the strict API policy.
    port = gw.server.proxy_port
    html = await raw_request(port, b"GET /site/page.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert html.headers["Content-Security-Policy"] == "default-src 'self'; frame-ancestors 'self'"
    assert html.headers["X-Frame-Options"] == "SAMEORIGIN" and html.headers["X-Content-Type-Options"] == "nosniff"
    own = await raw_request(port, b"GET /site/inline.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert own.headers.getall("Content-Security-Policy") == [INLINE_CSP]
    api = await raw_request(port, b"GET /api/data HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert api.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert api.headers["X-Frame-Options"] == "DENY"
    js = await raw_request(port, b"GET /site/app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert js.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"  # not a document
