"""Bucketing: accuracy of the split, stickiness, monotonic growth, JWT subject parsing."""

from __future__ import annotations

import base64

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.bucketing import BUCKETS, anonymous_id, bucket, jwt_subject, side_for


def _jwt(claims: object) -> str:
    payload = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    return f"Bearer eyJhbGciOiJIUzI1NiJ9.{payload}.c2lnbmF0dXJl"


def test_split_accuracy_30_percent_over_10000_subjects() -> None:
    subjects = [f"user-{i}" for i in range(10_000)]
    to_candidate = sum(side_for("default", s, 30)[0] == "candidate" for s in subjects)
    assert 2800 <= to_candidate <= 3200, to_candidate


@pytest.mark.parametrize("percent", [1, 10, 50, 90])
def test_split_accuracy_other_percentages(percent: int) -> None:
    subjects = [f"student-{i}" for i in range(10_000)]
    share = sum(side_for("analytics", s, percent)[0] == "candidate" for s in subjects) / 100
    assert abs(share - percent) <= 2, share


def test_sticky_same_subject_same_side() -> None:
    for i in range(500):
        first = side_for("default", f"u{i}", 37)
        assert all(side_for("default", f"u{i}", 37) == first for _ in range(3))


def test_monotonic_growth_30_to_50_never_moves_anyone_back() -> None:
    subjects = [f"user-{i}" for i in range(10_000)]
    at30 = {s: side_for("default", s, 30)[0] for s in subjects}
    at50 = {s: side_for("default", s, 50)[0] for s in subjects}
    moved_back = [s for s in subjects if at30[s] == "candidate" and at50[s] == "legacy"]
    assert moved_back == []
    moved_forward = sum(1 for s in subjects if at30[s] == "legacy" and at50[s] == "candidate")
    assert 1800 <= moved_forward <= 2200


@given(st.text(max_size=50), st.integers(0, 100), st.integers(0, 100))
def test_monotonic_for_any_subject_and_percentages(subject: str, p1: int, p2: int) -> None:
    low, high = sorted((p1, p2))
    if side_for("f", subject, low)[0] == "candidate":
        assert side_for("f", subject, high)[0] == "candidate"


def test_bucket_range_and_flag_independence() -> None:
    values = [bucket("default", f"s{i}") for i in range(2000)]
    assert all(0 <= v < BUCKETS for v in values)
    other = [bucket("analytics", f"s{i}") for i in range(2000)]
    # Different flags place the same subject differently (not the same guinea pigs everywhere).
    assert sum(a == b for a, b in zip(values, other, strict=True)) < 20


def test_zero_and_hundred_are_absolute() -> None:
    assert all(side_for("default", f"s{i}", 0)[0] == "legacy" for i in range(1000))
    assert all(side_for("default", f"s{i}", 100)[0] == "candidate" for i in range(1000))


def test_jwt_sub_is_read_without_verification() -> None:
    assert jwt_subject(_jwt({"sub": "student-42", "exp": 1})) == "student-42"
    assert jwt_subject(_jwt({"sub": 1234})) == "1234"
    assert jwt_subject(_jwt({"sub": "x"}).replace("Bearer", "bearer")) == "x"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not-a-jwt",
        "Bearer a.b",
        "Bearer a.!!!.c",
        "Bearer a..c",
        "Bearer a." + base64.urlsafe_b64encode(b"[1,2]").decode() + ".c",
        "Bearer a." + base64.urlsafe_b64encode(b"\xff\xfe").decode() + ".c",
        _jwt({"nosub": 1}),
        _jwt({"sub": None}),
        _jwt({"sub": True}),
        _jwt({"sub": ""}),
        _jwt({"sub": {"nested": 1}}),
        _jwt({"sub": "x" * 1000}),
        "Bearer " + "a" * 20000,
    ],
)
def test_jwt_garbage_yields_no_subject(header: str | None) -> None:
    assert jwt_subject(header) is None


def test_anonymous_id_is_stable_and_cookie_safe() -> None:
    first = anonymous_id("203.0.113.7")
    assert first == anonymous_id("203.0.113.7")
    assert first != anonymous_id("203.0.113.8")
    assert first.isalnum() and 8 <= len(first) <= 64
