"""Rate-limit keys from a request body field, without sockets: extraction, normalisation, fallbacks."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import ValidationError

from gateway.protection.bodykey import BodyFieldKey, parse_field_path
from gateway.protection.config import RateLimitRule
from gateway.protection.ratelimit import RuleSet

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def key(body: bytes, content_type: str | None = JSON, complete: bool = True, **kwargs: object) -> str | None:
    field = str(kwargs.pop("field", "email"))
    return BodyFieldKey(field, **kwargs).extract(body, content_type, complete)  # type: ignore[arg-type]


def test_json_and_form_bodies_give_the_same_normalised_key() -> None:
    expected = key(b'{"email": "ada@school.example", "password": "x"}')
    assert expected is not None and len(expected) == 32  # hashed: no e-mail address in Redis keys
    assert key(b'{"password": "y", "email": "  Ada@School.EXAMPLE\\t"}') == expected
    assert key(b'{"email":"ADA@school.example"}', "application/json; charset=utf-8") == expected
    assert key(b'{"email":"ada@school.example"}', "application/vnd.api+json") == expected
    assert key(b"email=+Ada%40School.example&password=x", FORM) == expected
    assert key(b"password=x&email=ada@school.example", "Application/X-WWW-Form-Urlencoded; charset=UTF-8") == expected
    assert key(b'{"email": "bob@school.example"}') != expected


def test_normalisation_is_configurable() -> None:
    assert key(b'{"email": " Ada "}', normalize="strip") == key(b'{"email": "Ada"}', normalize="strip")
    assert key(b'{"email": "Ada"}', normalize="strip") != key(b'{"email": "ada"}', normalize="strip")
    assert key(b'{"email": " ada"}', normalize="none") != key(b'{"email": "ada"}', normalize="none")


def test_nested_paths_dotted_or_json_pointer() -> None:
    body = b'{"user": {"login": {"email": "ada@x"}}, "list": [{"id": 7}], "a/b": "slash"}'
    assert key(body, field="user.login.email") == key(b'{"email": "ada@x"}')
    assert key(body, field="/user/login/email") == key(b'{"email": "ada@x"}')
    assert key(body, field="list.0.id") == key(b'{"email": 7}') is not None  # integers count
    assert key(body, field="/a~1b") == key(b'{"email": "slash"}')
    assert key(body, field="list.1.id") is None and key(body, field="user.login.email.x") is None
    assert parse_field_path("/a~0b/c") == ("a~b", "c")
    for bad in ("", "/", "a..b", "/a//b"):
        with pytest.raises(ValueError):
            parse_field_path(bad)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"password": "x"}', JSON),  # no such field
        (b'{"email": ""}', JSON),
        (b'{"email": "   "}', JSON),
        (b'{"email": null}', JSON),
        (b'{"email": true}', JSON),
        (b'{"email": ["a@x"]}', JSON),
        (b'{"email": {"a": 1}}', JSON),
        (b'["email"]', JSON),
        (b'{"email": "a@x"', JSON),  # truncated / invalid JSON
        (b"\xff\xfe{", JSON),
        (b"[" * 5000, JSON),  # nesting deeper than the parser's recursion limit
        (b'{"email": "a@x"}', "text/plain"),  # neither JSON nor form
        (b'{"email": "a@x"}', None),
        (b"email=a@x", JSON),
        (b"email=%ff%fe", FORM),  # not UTF-8
        (b"password=x", FORM),
        (b"", JSON),
        (b'{"email": "' + b"a" * 600 + b'"}', JSON),  # no account name is that long
    ],
)
def test_no_key_falls_back(body: bytes, content_type: str | None) -> None:
    assert key(body, content_type) is None


def test_a_body_that_did_not_end_within_the_cap_is_never_trusted() -> None:
    """The upstream's parser keeps the last duplicate; a prefix cannot show the last one."""
    prefix = b'{"email": "random@x", "pad": "'
    assert key(prefix + b'"}', complete=False) is None
    assert key(b'{"email": "a@x"}', complete=False) is None
    # Within the cap, duplicates resolve as the upstream's parser does: the last one wins.
    assert key(b'{"email": "rand@x", "email": "victim@x"}') == key(b'{"email": "victim@x"}')
    assert key(b"email=rand@x&email=victim@x", FORM) == key(b'{"email": "victim@x"}')


def test_rule_config_validation() -> None:
    rule = RateLimitRule(prefix="/login", key="body_field", body_field="user.email", limit=5)
    assert rule.normalize == "lower"
    with pytest.raises(ValidationError, match="go together"):
        RateLimitRule(prefix="/login", key="body_field", limit=5)
    with pytest.raises(ValidationError, match="go together"):
        RateLimitRule(prefix="/login", key="ip", body_field="email", limit=5)
    with pytest.raises(ValidationError, match="empty segment"):
        RateLimitRule(prefix="/login", key="body_field", body_field="a..b", limit=5)


def _headers(**values: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in values.items()}))


def test_ruleset_keys_body_field_rules_on_the_account_else_the_address() -> None:
    from gateway.protection.bodykey import BodyPrefix

    rules = RuleSet(
        [
            RateLimitRule.model_validate(
                {"prefix": "/api/v1/auth/login", "methods": ["POST"], "key": "ip", "limit": 5}
            ),
            RateLimitRule.model_validate(
                {
                    "prefix": "/api/v1/auth/login",
                    "methods": ["POST"],
                    "key": "body_field",
                    "body_field": "email",
                    "limit": 5,
                }
            ),
        ]
    )
    assert rules.reads_body("/api/v1/auth/login", "POST") and rules.reads_body("/api/v1/%61uth/login", "POST")
    assert not rules.reads_body("/api/v1/auth/login", "GET") and not rules.reads_body("/api/v1/users", "POST")
    assert not RuleSet([RateLimitRule(key="ip", limit=5)]).reads_body("/x", "POST")  # no body rule: never peek
    json_headers = _headers(Content_Type=JSON)
    body = BodyPrefix(b'{"email": "Ada@X"}', True)
    keys = [c.key for c in rules.checks("/api/v1/auth/login", "POST", json_headers, "10.0.0.1", body)]
    account = BodyFieldKey("email").extract(b'{"email": "ada@x"}', JSON, True)
    assert keys == ["0:ip:10.0.0.1", f"1:acct:{account}"]
    # From another address: the same account key.
    other = rules.checks("/api/v1/auth/login", "POST", json_headers, "10.0.0.2", body)
    assert other[1].key == f"1:acct:{account}"
    # No readable account: the rule keys on the address.
    for sample in (None, BodyPrefix(b'{"user": "x"}', True), BodyPrefix(b'{"email": "a@x"}', False)):
        fallback = rules.checks("/api/v1/auth/login", "POST", json_headers, "10.0.0.1", sample)
        assert [c.key for c in fallback] == ["0:ip:10.0.0.1", "1:ip:10.0.0.1"]
