"""Shadow / rate-limit / read-only review: regressions found from the outside."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gateway.shadow.settings import ShadowRule
from tests.conftest import MakeGateway, make_config


async def test_read_only_legacy_treats_unknown_methods_as_writes(
    upstreams: dict[str, Any], make_gateway: MakeGateway
) -> None:
    """A freeze fails closed: MKCOL, PROPPATCH, PURGE... reached a read-only legacy (only POST, PUT,
    PATCH and DELETE were refused); every known read still goes through."""
    config = make_config(
        upstreams,
        routes=[{"prefix": "/api/v1/grades/", "flag": "grades"}],
        flags={"default": 0, "grades": 0},
        safety={
            "legacy_read_only": {"default": {"mode": "reject", "retry_after": 60}, "grades": {"mode": "candidate"}}
        },
    )
    gw = await make_gateway(config)
    for method in ("MKCOL", "PROPPATCH", "PURGE", "POST"):
        async with gw.request(method, "/api/v1/users") as resp:
            assert resp.status == 503, method
            assert resp.headers["Retry-After"] == "60" and "X-Side" not in resp.headers
        async with gw.request(method, "/api/v1/grades/7") as resp:
            assert resp.status == 200 and resp.headers["X-Side"] == "candidate", method
    for method in ("GET", "HEAD", "OPTIONS", "TRACE"):
        async with gw.request(method, "/api/v1/users") as resp:
            assert resp.status == 200 and resp.headers["X-Side"] == "legacy", method


@pytest.mark.parametrize("allow_writes", [False, True])
def test_a_shadow_rule_never_mirrors_trace(allow_writes: bool) -> None:
    """TRACE echoes the request, credentials included: it is never mirrored (gateway/methods.py), so
    a rule listing it is refused for that reason, not called a double write nor allowed by allow_writes."""
    with pytest.raises(ValidationError, match="TRACE is never mirrored"):
        ShadowRule.model_validate({"percent": 10, "methods": ["GET", "trace"], "allow_writes": allow_writes})
