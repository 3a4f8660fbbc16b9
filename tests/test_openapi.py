"""The admin API's OpenAPI document: complete, and held to by the live listener (schemathesis)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import MakeGateway, make_config

UNDOCUMENTED = {"/", "/ui"}  # the HTML status page


async def test_every_admin_route_is_documented(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> None:
    gw = await make_gateway(make_config(upstreams))
    async with gw.admin("GET", "/openapi.json", token=None) as resp:
        doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    app = gw.server._admin_runner.app
    registered: dict[str, set[str]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD" and path not in UNDOCUMENTED:
            assert path is not None, info
            registered.setdefault(path, set()).add(route.method.lower())
    documented = {path: {m for m in ops if m != "parameters"} for path, ops in doc["paths"].items()}
    assert registered == documented


@pytest.mark.slow
async def test_schemathesis_against_the_live_admin_listener(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, tmp_path: Path
) -> None:
    # The interpreter running the tests, never PATH: the test extras are installed beside it.
    if importlib.util.find_spec("schemathesis") is None:
        pytest.fail("schemathesis is not installed (it is in the test extras)")
    gw = await make_gateway(
        make_config(
            upstreams,
            flags={"default": 0, "analytics": 10},
            routes=[{"prefix": "/api/v1/analytics/", "flag": "analytics"}],
        )
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        gw.admin_url + "/openapi.json",
        "-H",
        "Authorization: Bearer test-admin-token",
        "--checks",
        "all",
        "--max-examples",
        "25",
        "--seed",
        "20261125",
        "--no-color",
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert re.search(r"\d+ passed", text), text[-2000:]
