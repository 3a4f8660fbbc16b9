"""Route table: longest prefix on segment boundaries, methods, pins, normalisation."""

from __future__ import annotations

import pytest

from gateway.config import RouteRule
from gateway.routing import DEFAULT_ROUTE, RouteTable, match_path, normalize_path


def _table() -> RouteTable:
    return RouteTable(
        [
            RouteRule(prefix="/api/v1/auth/", pin="legacy", name="auth"),
            RouteRule(prefix="/api/v1/analytics/", flag="analytics", name="analytics"),
            RouteRule(prefix="/api/v1/analytics/reports", flag="reports"),
            RouteRule.model_validate(
                {
                    "prefix": "/api/v1/attendance",
                    "methods": ["POST", "put"],
                    "pin": "legacy",
                    "name": "attendance-writes",
                }
            ),
            RouteRule(prefix="/api/v1/attendance", flag="attendance", name="attendance"),
        ]
    )


@pytest.mark.parametrize(
    ("path", "method", "label"),
    [
        ("/api/v1/auth/login", "POST", "auth"),
        ("/api/v1/auth", "GET", "auth"),
        ("/api/v1/authors", "GET", "default"),
        ("/api/v1/analytics/dashboard", "GET", "analytics"),
        ("/api/v1/analytics/reports/2026?x=1", "GET", "/api/v1/analytics/reports"),
        ("/api/v1/analytics/reportsX", "GET", "analytics"),
        ("/api/v1/attendance/daily", "POST", "attendance-writes"),
        ("/api/v1/attendance/daily", "PUT", "attendance-writes"),
        ("/api/v1/attendance/daily", "GET", "attendance"),
        ("/api/v1/users", "GET", "default"),
        ("/", "GET", "default"),
    ],
)
def test_longest_prefix_and_methods(path: str, method: str, label: str) -> None:
    assert _table().match(path, method).label == label


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/users/../auth/login",
        "/api/v1//auth/login",
        "/api/v1/./auth/login",
        "/api/v1/%61uth/login",
    ],
)
def test_encodings_cannot_dodge_a_pin(path: str) -> None:
    route = _table().match(path, "GET")
    assert route.pin == "legacy", (path, match_path(path))


def test_encoded_slash_stays_inside_its_segment() -> None:
    # The upstream treats "auth%2Flogin" as one segment, so it is not under /api/v1/auth/.
    assert match_path("/api/v1/auth%2Flogin") == "/api/v1/auth%2Flogin"
    assert _table().match("/api/v1/x%2F..%2F/auth", "GET").label == "default"


def test_pin_and_flag_results() -> None:
    table = _table()
    assert table.match("/api/v1/auth/x", "GET").flag is None
    assert table.match("/api/v1/analytics/x", "GET").flag == "analytics"
    assert RouteTable([]).match("/anything", "GET") is DEFAULT_ROUTE


@pytest.mark.parametrize(
    ("given", "expected"),
    [("/a/b/../c", "/a/c"), ("/../../x", "/x"), ("//a//b/", "/a/b/"), ("/a/.", "/a/"), ("", "/"), ("/a/b", "/a/b")],
)
def test_normalize_path(given: str, expected: str) -> None:
    assert normalize_path(given) == expected


def test_root_prefix_catches_everything() -> None:
    table = RouteTable([RouteRule(prefix="/", pin="candidate", name="all")])
    assert table.match("/x/y", "GET").label == "all"
