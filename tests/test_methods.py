"""One method vocabulary for route rules and metric labels; invented methods share one label."""

from __future__ import annotations

from typing import Any

from gateway.methods import HTTP_METHODS, method_label
from tests.conftest import make_config
from tests.support import metric_value

# Methods the HTTP parser (llhttp) accepts but no rule can name: each must count as OTHER.
WEBDAV_AND_OTHERS = ("PROPFIND", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "PURGE", "REPORT", "LINK")


def test_one_vocabulary() -> None:
    assert {method_label(m) for m in HTTP_METHODS} == HTTP_METHODS
    assert method_label("PROPFIND") == method_label("get") == "OTHER"  # case matters on the wire


async def test_rules_and_labels_agree_and_invented_methods_share_one_label(upstreams: Any, make_gateway: Any) -> None:
    config = make_config(upstreams, routes=[{"prefix": "/trace", "methods": ["TRACE"], "pin": "candidate"}])
    gw = await make_gateway(config)
    async with gw.request("TRACE", "/trace/x") as resp:
        assert resp.status == 200 and (await resp.json())["side"] == "candidate"  # the rule matched
    for method in WEBDAV_AND_OTHERS:
        async with gw.request(method, "/x") as resp:
            assert resp.status == 200
    labels = {"upstream": "candidate", "route": "/trace", "status_class": "2xx"}
    assert await metric_value(gw.session, gw.admin_url, "gateway_requests_total", method="TRACE", **labels) == 1
    other = {"upstream": "legacy", "route": "default", "status_class": "2xx", "method": "OTHER"}
    assert await metric_value(gw.session, gw.admin_url, "gateway_requests_total", **other) == len(WEBDAV_AND_OTHERS)
    async with gw.admin("GET", "/metrics", token=None) as resp:
        text = await resp.text()
    assert not any(f'method="{m}"' in text for m in WEBDAV_AND_OTHERS)
    assert len(gw.state.metrics._children) == 2  # one cached child per label set, not per method
