"""The login endpoint's rate-limit rules, an upstream that refuses every login (401) and a gateway
limiting it: shared by the body-keyed rate-limit tests and the drain tests. Registered as a pytest
plugin by conftest.py (the ``login_backend`` fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Gateway, MakeGateway, make_config
from tests.support import RawUpstream, answering

LOGIN = "/api/v1/auth/login"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
PER_ACCOUNT = {
    "name": "login-per-account",
    "prefix": LOGIN,
    "methods": ["POST"],
    "key": "body_field",
    "body_field": "email",
    "limit": 5,
    "period": "minute",
}
PER_IP = {"name": "login-per-ip", "prefix": LOGIN, "methods": ["POST"], "key": "ip", "limit": 5, "period": "minute"}


@pytest.fixture
async def login_backend() -> AsyncIterator[RawUpstream]:
    unauthorized = b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    async with RawUpstream(answering(unauthorized)) as server:
        yield server


async def limited_gateway(
    make_gateway: MakeGateway, backend: RawUpstream, rules: list[dict[str, Any]], body_cap: int = 4096, **overrides: Any
) -> Gateway:
    limits = {"rules": rules, "body_cap": body_cap}
    config = make_config({"legacy": backend.url, "candidate": backend.url}, rate_limits=limits, **overrides)
    return await make_gateway(config)
