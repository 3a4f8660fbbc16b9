"""The side decision without sockets: pins, forcing, subjects, cookie parsing."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.bucketing import anonymous_id
from gateway.config import BucketingConfig, ForceConfig
from gateway.routing import Route
from gateway.splitting import Splitter, cookie_value

SECRET = "0123456789abcdef-secret"
FLAG_ROUTE = Route(label="default", flag="default", pin=None)


def headers(**items: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in items.items()}))


def splitter(**bucketing: object) -> Splitter:
    return Splitter(BucketingConfig.model_validate(bucketing), ForceConfig(secret=SECRET))


def test_cookie_value_parsing() -> None:
    assert cookie_value(["a=1; cutover_id=abc123456; b=2"], "cutover_id") == "abc123456"
    assert cookie_value(["a=1", 'cutover_id="quoted12345"'], "cutover_id") == "quoted12345"
    assert cookie_value(["xcutover_id=1; cutover_idx=2"], "cutover_id") is None
    assert cookie_value(["cutover_id"], "cutover_id") is None
    assert cookie_value([], "cutover_id") is None


def test_pin_wins_over_percentage_but_not_over_forcing() -> None:
    s = splitter()
    pinned = Route(label="auth", flag=None, pin="legacy")
    assert s.decide(pinned, {"default": 100}, headers(), "1.2.3.4").side == "legacy"
    forced = headers(X_Gateway_Force="Candidate", X_Gateway_Force_Secret=SECRET)
    decision = s.decide(pinned, {"default": 0}, forced, "1.2.3.4")
    assert (decision.side, decision.reason) == ("candidate", "forced")


def test_subject_order_is_respected() -> None:
    cookie = "r" + "1" * 31
    h = headers(Cookie=f"cutover_id={cookie}")
    assert splitter().subject(h, "1.2.3.4")[:2] == (cookie, "cookie")
    ip_first = splitter(subject=["ip", "cookie"], anonymous="ip")
    assert ip_first.subject(h, "1.2.3.4") == (anonymous_id("1.2.3.4"), "ip", anonymous_id("1.2.3.4"))
    assert splitter(subject=["jwt_sub"]).subject(h, "1.2.3.4")[1] == "ip"  # last resort
    assert splitter(subject=["jwt_sub", "ip"]).subject(h, "1.2.3.4") == (anonymous_id("1.2.3.4"), "ip", None)


def test_anonymous_clients_get_a_fresh_random_id_by_default() -> None:
    s = splitter()
    first, source, issue = s.subject(headers(), "1.2.3.4")
    assert source == "cookie" and issue == first and first.startswith("r") and len(first) == 33
    again, _, issue_again = s.subject(headers(), "1.2.3.4")  # same address, no cookie: a new subject
    assert again != first and issue_again == again
    # The issued id, sent back, is accepted as the cookie and issues nothing new.
    assert s.subject(headers(Cookie=f"cutover_id={first}"), "1.2.3.4") == (first, "cookie", None)


def test_anonymous_ip_mode_keys_on_the_address() -> None:
    s = splitter(anonymous="ip")
    assert s.subject(headers(), "1.2.3.4") == (anonymous_id("1.2.3.4"), "ip", anonymous_id("1.2.3.4"))
    assert s.subject(headers(), "1.2.3.4") == s.subject(headers(), "1.2.3.4")


def test_random_mode_refuses_ip_before_cookie() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="'cookie' must come before 'ip'"):
        BucketingConfig(subject=("ip", "cookie"))


def test_random_cookie_when_ip_is_not_a_source() -> None:
    key, source, issue = splitter(subject=["cookie"]).subject(headers(), "1.2.3.4")
    assert source == "cookie" and issue == key and key.startswith("r") and len(key) == 33


def test_unknown_flag_in_snapshot_means_legacy() -> None:
    route = Route(label="x", flag="missing", pin=None)
    assert splitter().decide(route, {"default": 100}, headers(), "1.2.3.4").side == "legacy"


def test_decision_explains_itself() -> None:
    d = splitter().decide(FLAG_ROUTE, {"default": 50}, headers(), "9.9.9.9")
    assert d.reason == "bucket" and d.flag == "default" and d.percent == 50
    assert d.bucket is not None and (d.side == "candidate") == (d.bucket < 5000)
    assert d.issue_cookie == d.subject and d.subject is not None and d.subject.startswith("r")
    assert d.bucket == splitter().bucket("default", d.subject)  # the first request uses the issued id


def test_memos_are_bounded_in_entries_and_key_size() -> None:
    from gateway.splitting import MEMO_KEY_MAX

    s = Splitter(BucketingConfig(), ForceConfig(), memo_size=4)
    for i in range(10):
        s.subject(headers(Authorization=f"Bearer a.{i}.c"), "1.2.3.4")
        s.bucket("default", f"s{i}")
    info = s.memo_info()
    assert info["subjects"].currsize <= 4 and info["buckets"].currsize <= 4
    before = s.memo_info()["subjects"]
    long_token = "Bearer " + "x" * (MEMO_KEY_MAX + 1)
    s.subject(headers(Authorization=long_token), "1.2.3.4")
    s.bucket("default", "y" * (MEMO_KEY_MAX + 1))
    after = s.memo_info()
    # Too long to keep: worked out directly, the memos did not even look (no hit, no miss).
    assert (after["subjects"].hits, after["subjects"].misses) == (before.hits, before.misses)
    assert after["buckets"].misses == info["buckets"].misses


def test_memos_keep_hot_entries_when_full() -> None:
    """Least recently used out: a user seen on every request stays cached through a flood of new ones."""
    s = Splitter(BucketingConfig(), ForceConfig(), memo_size=8)
    hot = headers(Authorization="Bearer hot.token.x")
    s.subject(hot, "1.2.3.4")
    s.bucket("default", "hot")
    for i in range(1000):
        s.subject(headers(Authorization=f"Bearer cold.{i}.x"), "1.2.3.4")
        s.bucket("default", f"cold-{i}")
        s.subject(hot, "1.2.3.4")
        s.bucket("default", "hot")
    info = s.memo_info()
    # One miss for the hot entry and one per cold entry; with a clear-all memo the hot entry
    # was dropped every time it filled (125 more misses here).
    assert info["subjects"].hits == 1000 and info["subjects"].misses == 1001
    assert info["buckets"].hits == 1000 and info["buckets"].misses == 1001
    assert info["buckets"].currsize == 8
