"""`gateway explain` tells the whole truth: forced side, drained upstreams, read-only legacy --
checked against what the proxy really does with the same request."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.config import Config
from tests.conftest import make_config
from tests.support import bearer, gateway_cli

SECRET = "s" * 16


async def explain(gw: Any, *args: str) -> dict[str, Any]:
    code, out, err = await gateway_cli("explain", *args, "--json", admin=gw.admin_url, token=None)
    assert code == 0, err
    return dict(orjson.loads(out))


async def served_by(gw: Any, method: str, path: str, headers: dict[str, str]) -> tuple[int, str | None]:
    async with gw.request(method, path, headers=headers) as resp:
        await resp.read()
        return resp.status, resp.headers.get("X-Side")


async def test_forced_and_read_only_legacy(upstreams: Any, make_gateway: Any) -> None:
    gw = await make_gateway(
        make_config(
            upstreams,
            flags={"default": 0, "grades": 0},
            routes=[{"prefix": "/api/v1/grades/", "flag": "grades"}, {"prefix": "/pinned/", "pin": "candidate"}],
            force={"secret": SECRET},
            safety={
                "legacy_read_only": {"default": {"mode": "reject", "retry_after": 120}, "grades": {"mode": "candidate"}}
            },
        )
    )
    user = bearer("student-1")
    force = {"X-Gateway-Force": "candidate", "X-Gateway-Force-Secret": SECRET}

    data = await explain(gw, "--subject", "student-1", "--path", "/api/v1/x", "--force", "candidate")
    assert data["side"] == "candidate" and data["reason"] == "forced"
    assert await served_by(gw, "GET", "/api/v1/x", {**user, **force}) == (200, "candidate")

    data = await explain(gw, "--subject", "student-1", "--path", "/api/v1/x", "--method", "POST")
    assert data["outcome"] == "refused" and data["retryAfter"] == 120 and data["reason"] == "legacy_read_only"
    assert (await served_by(gw, "POST", "/api/v1/x", user))[0] == 503

    data = await explain(gw, "--subject", "student-1", "--path", "/api/v1/grades/7", "--method", "PUT")
    assert data["side"] == "candidate" and data["decidedSide"] == "legacy" and data["outcome"] == "forwarded"
    assert await served_by(gw, "PUT", "/api/v1/grades/7", user) == (200, "candidate")

    code, out, _ = await gateway_cli(
        "explain", "--subject", "student-1", "--path", "/api/v1/x", "--method", "DELETE", admin=gw.admin_url
    )
    assert code == 0 and "REFUSED (503, legacy read-only)" in out and "Retry-After 120s" in out


async def test_drained_upstream_and_forcing_without_a_secret(upstreams: Any, make_gateway: Any) -> None:
    config = make_config(upstreams, flags={"default": 100}, routes=[{"prefix": "/pinned/", "pin": "legacy"}])
    data = config.model_dump()
    data["upstreams"]["legacy"]["drained"] = True
    gw = await make_gateway(Config.model_validate(data))
    answer = await explain(gw, "--subject", "u1", "--path", "/pinned/x")
    assert answer["side"] == "candidate" and answer["decidedSide"] == "legacy" and answer["reason"] == "drained"
    assert await served_by(gw, "GET", "/pinned/x", bearer("u1")) == (200, "candidate")

    answer = await explain(gw, "--subject", "u1", "--path", "/x", "--force", "legacy")
    assert answer["side"] == "candidate" and any("no force secret" in n for n in answer["notes"])
    code, out, _ = await gateway_cli("explain", "--subject", "u1", "--path", "/pinned/x", admin=gw.admin_url)
    assert code == 0 and "-> candidate" in out and "legacy upstream is drained" in out
