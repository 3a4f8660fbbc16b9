"""A route with its own body idle timeout or with upgrades refused is still shadowed: the shadow
policies are keyed by the same Route the route table matches."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.routing import RouteTable
from gateway.shadow.policy import policies
from tests.conftest import make_config


@pytest.mark.parametrize(
    "extra",
    [{}, {"body_idle_timeout": 5}, {"upgrades": False}, {"body_idle_timeout": 7, "upgrades": False}],
    ids=["plain", "body_idle_timeout", "upgrades_refused", "both"],
)
def test_every_shadowed_route_is_found_by_the_route_table(extra: dict[str, Any]) -> None:
    config = make_config(
        {"legacy": "http://127.0.0.1:1", "candidate": "http://127.0.0.1:2"},
        routes=[{"prefix": "/api/", "flag": "default", "shadow": {"percent": 100}, **extra}],
    )
    route = RouteTable(config.routes).match("/api/items", "GET")
    assert route.label != "default"  # the /api/ rule matched, not the default route
    assert route in policies(config)
