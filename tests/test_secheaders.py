"""Security header edits without sockets: API vs HTML answers, upstream values, routes, HSTS."""

from __future__ import annotations

from gateway.protection.config import SecurityHeadersConfig
from gateway.protection.secheaders import HeaderEdits, SecurityHeaders, is_html

API_CSP = "default-src 'none'; frame-ancestors 'none'"
HTML_CSP = "default-src 'self'; frame-ancestors 'self'"


def edits(
    headers: list[tuple[str, str]],
    content_type: str | None = None,
    path: str = "/",
    https: bool = False,
    **config: object,
) -> tuple[dict[str, str], set[str]]:
    result = SecurityHeaders(SecurityHeadersConfig.model_validate(config)).edits(headers, content_type, path, https)
    assert isinstance(result, HeaderEdits)
    return dict(result.set), set(result.remove)


def test_api_answers_get_the_strict_policy_replacing_the_upstreams() -> None:
    upstream = [("Content-Type", "application/json"), ("Content-Security-Policy", "default-src *"), ("Server", "x")]
    set_, remove = edits(upstream, "application/json")
    assert set_["Content-Security-Policy"] == API_CSP and set_["X-Frame-Options"] == "DENY"
    assert set_["X-Content-Type-Options"] == "nosniff" and "Strict-Transport-Security" not in set_
    assert remove == {"Server"}
    assert edits([], None)[0]["Content-Security-Policy"] == API_CSP  # the gateway's own answers, preflights


def test_html_answers_get_a_same_origin_default() -> None:
    set_, remove = edits([("Content-Type", "text/html; charset=utf-8")], "text/html; charset=utf-8")
    assert set_["Content-Security-Policy"] == HTML_CSP and set_["X-Frame-Options"] == "SAMEORIGIN"
    assert set_["X-Content-Type-Options"] == "nosniff" and set_["Referrer-Policy"] == "no-referrer"
    assert remove == set()
    assert edits([], "application/xhtml+xml")[0]["X-Frame-Options"] == "SAMEORIGIN"


def test_html_answers_keep_the_upstreams_own_csp_and_xfo() -> None:
    own = [("content-security-policy", "script-src 'self' 'unsafe-inline'"), ("X-Frame-Options", "DENY")]
    set_, remove = edits(own, "text/html")
    assert "Content-Security-Policy" not in set_ and "X-Frame-Options" not in set_ and not remove
    assert set_["X-Content-Type-Options"] == "nosniff"  # the rest of the policy still applies
    only_xfo = edits([("X-Frame-Options", "DENY")], "text/html")[0]
    assert only_xfo["Content-Security-Policy"] == HTML_CSP and "X-Frame-Options" not in only_xfo


def test_html_headers_are_configurable() -> None:
    custom = {"Content-Security-Policy": "default-src 'self' https://cdn.example", "X-Frame-Options": None}
    set_, remove = edits([], "text/html", html_headers=custom)
    assert set_["Content-Security-Policy"] == "default-src 'self' https://cdn.example"
    assert "X-Frame-Options" not in set_ and not remove  # null: nothing added for HTML
    # Only the named keys change; the other default stays.
    partial = edits([], "text/html", html_headers={"Content-Security-Policy": "default-src 'self' data:"})[0]
    assert partial["X-Frame-Options"] == "SAMEORIGIN"
    # API answers are untouched by html_headers.
    assert edits([], "application/json", html_headers=custom)[0]["X-Frame-Options"] == "DENY"


def test_routes_apply_to_both_kinds_and_their_explicit_values_win() -> None:
    embed = {"X-Frame-Options": None, "Content-Security-Policy": "frame-ancestors *"}
    routes = [{"prefix": "/embed", "headers": embed}]
    set_, remove = edits([("X-Frame-Options", "DENY")], "text/html", "/embed/widget", routes=routes)
    assert set_["Content-Security-Policy"] == "frame-ancestors *" and remove == {"X-Frame-Options"}
    api_set, _ = edits([], "application/json", "/embed/data", routes=routes)
    assert api_set["Content-Security-Policy"] == "frame-ancestors *"
    # Other paths: the defaults.
    assert edits([], "text/html", "/other", routes=routes)[0]["Content-Security-Policy"] == HTML_CSP


def test_keep_upstream_and_hsts() -> None:
    upstream = [("X-Frame-Options", "SAMEORIGIN"), ("Strict-Transport-Security", "max-age=5")]
    set_, remove = edits(upstream, "application/json", https=True, keep_upstream=True)
    assert "X-Frame-Options" not in set_ and "Strict-Transport-Security" not in set_ and not remove
    set_, remove = edits(upstream, "application/json", https=True)
    assert set_["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert set_["X-Frame-Options"] == "DENY"
    _, remove = edits(upstream, "text/html", https=False)
    assert remove == {"Strict-Transport-Security"}  # never over plain HTTP


def test_is_html() -> None:
    assert is_html("text/html") and is_html("TEXT/HTML; charset=utf-8") and is_html(" application/xhtml+xml")
    assert not is_html(None) and not is_html("application/json") and not is_html("text/html-sandboxed")


def _applied(result: HeaderEdits, upstream: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """What the client gets from the general edits: removed and replaced names out, set ones in."""
    gone = {name.lower() for name in result.remove} | {name.lower() for name, _ in result.set}
    return [(n, v) for n, v in upstream if n.lower() not in gone] + list(result.set)


def _fixed(
    fixed: tuple[frozenset[str], tuple[tuple[str, str], ...]], upstream: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """What the client gets from the copying pass's fixed edits."""
    return [(n, v) for n, v in upstream if n.lower() not in fixed[0]] + list(fixed[1])


def test_the_copying_pass_and_the_general_edits_agree() -> None:
    """The request path applies ``fixed_edits`` for common API answers and ``edits`` otherwise
    (CORS, rate-limit headers): one answer must come out the same either way, HSTS included."""
    upstream = [("Content-Type", "application/json"), ("Strict-Transport-Security", "max-age=5"), ("Server", "x")]
    for config in ({}, {"hsts": None}, {"headers": {"X-Frame-Options": None}}):
        policy = SecurityHeaders(SecurityHeadersConfig.model_validate(config))
        for https in (False, True):
            fixed = policy.fixed_edits("/", False, https)
            assert fixed is not None
            general = _applied(policy.edits(upstream, "application/json", "/", https), upstream)
            assert sorted(_fixed(fixed, upstream)) == sorted(general), (config, https)
