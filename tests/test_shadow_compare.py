"""Pure shadow logic, no sockets: paths, comparison, normalizers, noise, redaction, report numbers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.shadow.compare import Answer, Rules, compare, json_differences
from gateway.shadow.noise import NoiseLearner
from gateway.shadow.normalize import build
from gateway.shadow.paths import ANY_INDEX, PatternSet, generic, parse, render
from gateway.shadow.redact import REDACTED, Redactor
from gateway.shadow.stats import Result, increments, report_row

JSON = {"content-type": "application/json"}


def answer(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, headers or JSON, orjson.dumps(data))


def fields(a: Any, b: Any, **rules: Any) -> list[str]:
    return [d.where for d in compare(answer(a), answer(b), Rules(**rules)).differences]


def patterns(*texts: str) -> PatternSet:
    return PatternSet(parse(t) for t in texts)


def test_paths_parse_render_round_trip() -> None:
    assert parse("$.data[*].updatedAt") == ("data", ANY_INDEX, "updatedAt")
    assert parse('$["odd.key"][3]') == ("odd.key", 3)
    for text in ("$.data[*].updatedAt", '$["odd.key"][3]', "$.meta.*", "$"):
        assert render(parse(text)) == text
    assert render(generic(("data", 7, "x"))) == "$.data[*].x"
    with pytest.raises(ValueError, match="position"):
        parse("$.data[x]")
    with pytest.raises(ValueError, match="starting with"):
        parse("data.x")


def test_object_key_order_never_matters() -> None:
    a = {"id": 1, "name": "Ada", "nested": {"x": 1, "y": [1, 2]}}
    b = {"nested": {"y": [1, 2], "x": 1}, "name": "Ada", "id": 1}
    assert compare(answer(a), Answer(200, JSON, b'{"nested":{"y":[1,2],"x":1},"name":"Ada","id":1}'), Rules()).match
    assert fields(a, b) == []


def test_differences_name_the_place() -> None:
    a = {"data": [{"id": 1, "grade": 2.0}, {"id": 2, "grade": 3.0}]}
    b = {"data": [{"id": 1, "grade": 2.0}, {"id": 2, "grade": 3.5}], "extra": True}
    assert fields(a, b) == ["$.data[1].grade", "$.extra"]
    assert [d.field for d in compare(answer(a), answer(b), Rules()).differences] == ["$.data[*].grade", "$.extra"]
    assert fields({"a": 1}, {"a": "1"}) == ["$.a"]
    assert fields({"a": True}, {"a": 1}) == ["$.a"]
    assert fields({"a": None}, {"a": 0}) == ["$.a"]


def test_array_order_matters_unless_the_path_is_unordered() -> None:
    a = {"data": [{"id": 1, "at": "x"}, {"id": 2, "at": "y"}], "tags": ["a", "b"]}
    b = {"data": [{"id": 2, "at": "q"}, {"id": 1, "at": "z"}], "tags": ["b", "a"]}
    assert fields(a, b) != []
    # Unordered + ignore inside the elements: matched as multisets on what is not ignored.
    assert fields(a, b, unordered=patterns("$.data", "$.tags"), ignore=patterns("$.data[*].at")) == []
    # A real difference inside an unordered array is still reported, on the leftover element.
    c = {"data": [{"id": 2, "at": "q"}, {"id": 3, "at": "z"}], "tags": ["b", "a"]}
    assert fields(a, c, unordered=patterns("$.data", "$.tags"), ignore=patterns("$.data[*].at")) == ["$.data[0].id"]


def test_wildcard_ignore_paths() -> None:
    a = {"data": [{"id": 1, "updatedAt": "t1"}, {"id": 2, "updatedAt": "t2"}], "meta": {"requestId": "r1", "n": 2}}
    b: dict[str, Any] = {
        "data": [{"id": 1, "updatedAt": "t3"}, {"id": 2, "updatedAt": "t4"}],
        "meta": {"requestId": "r2", "n": 2},
    }
    assert fields(a, b) == ["$.data[0].updatedAt", "$.data[1].updatedAt", "$.meta.requestId"]
    assert fields(a, b, ignore=patterns("$.data[*].updatedAt", "$.meta.requestId")) == []
    assert fields(a, b, ignore=patterns("$.data[*].*", "$.meta")) == []
    # An ignore rule does not hide differences elsewhere.
    b["meta"]["n"] = 3
    assert fields(a, b, ignore=patterns("$.data[*].updatedAt", "$.meta.requestId")) == ["$.meta.n"]


def test_numeric_tolerance() -> None:
    assert fields({"grade": 2.504}, {"grade": 2.51}, tolerance=0.01) == []
    assert fields({"grade": 2.50}, {"grade": 2.52}, tolerance=0.01) == ["$.grade"]
    assert fields({"n": 3}, {"n": 3.0}) == []
    assert fields({"grade": 2.504}, {"grade": 2.51}) == ["$.grade"]


def test_normalizers_for_uuids_and_timestamps() -> None:
    a = {"id": "0b6f3c1e-9d7a-4b8e-8f00-1a2b3c4d5e6f", "at": "2026-11-25T10:00:00.123456+00:00", "day": "Mon"}
    b = {"id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "at": "2026-11-25T10:00:01Z", "day": "Tue"}
    assert fields(a, b) == ["$.id", "$.at", "$.day"]
    assert fields(a, b, normalizer=build(["uuid", "timestamp"])) == ["$.day"]


def test_status_headers_and_bytes() -> None:
    text = {"content-type": "text/plain"}
    assert compare(Answer(200, text, b"hello"), Answer(200, text, b"hello"), Rules()).match
    diff = compare(Answer(200, text, b"hello"), Answer(201, {"content-type": "text/html"}, b"help!"), Rules())
    assert [d.where for d in diff.differences] == ["status", "header:content-type", "body"]
    assert "first difference at byte 3" in diff.differences[2].shadow
    # A body over the cap (None): status and headers only, and the comparison says so.
    over = compare(Answer(200, text, None), Answer(200, text, b"other"), Rules())
    assert over.match and not over.body_compared


def test_many_differences_are_truncated() -> None:
    diffs, truncated = json_differences(list(range(1000)), list(range(1, 1001)), Rules())
    assert truncated and len(diffs) == 50


def test_noise_learning_is_per_route_visible_and_resettable() -> None:
    learner = NoiseLearner()
    first = {"data": [{"id": 1, "generatedAt": "2026-11-25T10:00:00.000001"}], "n": 1}
    second = {"data": [{"id": 1, "generatedAt": "2026-11-25T10:00:00.000002"}], "n": 1}
    same_side = compare(answer(first), answer(second), Rules())
    assert learner.learn("users", same_side) == ["$.data[*].generatedAt"]
    assert learner.learn("users", same_side) == []  # already known
    assert learner.snapshot() == {"users": ["$.data[*].generatedAt"]}
    candidate = {"data": [{"id": 1, "generatedAt": "2026-11-25T10:00:00.000003"}], "n": 2}
    result = compare(answer(first), answer(candidate), Rules(), learner.ignores("users"))
    assert [d.where for d in result.differences] == ["$.n"]
    assert learner.ignores("other") is None
    assert learner.reset(["users"]) == ["users"] and learner.snapshot() == {}


def test_redaction() -> None:
    redactor = Redactor(extra_keys=["email", "date_of_birth"])
    for key in (
        "password",
        "Password",
        "db_password",
        "resetToken",
        "access_token",
        "api-key",
        "Authorization",
        "email",
        "dateOfBirth",
        "client_secret",
    ):
        assert redactor.sensitive(key), key
    for key in ("name", "grade", "tokens_used_count", "id"):
        assert not redactor.sensitive(key), key
    assert redactor.value("hunter2", ("user", "password")) == REDACTED
    assert redactor.value({"name": "Ada", "token": "t", "contacts": [{"email": "a@b"}]}, ("user",)) == {
        "name": "Ada",
        "token": REDACTED,
        "contacts": [{"email": REDACTED}],
    }
    assert (
        redactor.target("/login?user=ada&password=x&token=y") == f"/login?user=ada&password={REDACTED}&token={REDACTED}"
    )
    assert redactor.target("/users?page=2") == "/users?page=2"
    assert redactor.header("set-cookie", "sid=1") == REDACTED
    assert len(redactor.value("x" * 1000)) < 300


def test_report_numbers_on_a_known_mix() -> None:
    counters: dict[str, int] = {}

    def add(result: Result) -> None:
        for key, value in increments(result).items():
            counters[key] = counters.get(key, 0) + value

    for _ in range(6):
        add(Result("match", (), {"legacy": 0.100, "candidate": 0.050}))
    for _ in range(3):
        add(Result("mismatch", ("$.data[*].grade",), {"legacy": 0.100, "candidate": 0.050}))
    add(Result("mismatch", ("$.data[*].grade", "status"), {"legacy": 0.100, "candidate": 0.050}, body_compared=False))
    add(Result("shadow_error"))
    row = report_row("users", counters)
    assert row["compared"] == 10 and row["matched"] == 6 and row["mismatched"] == 4
    assert row["matchPercent"] == 60.0 and row["headersOnly"] == 1 and row["shadowErrors"] == 1
    assert row["topFields"] == [{"field": "$.data[*].grade", "count": 4}, {"field": "status", "count": 1}]
    # Buckets are ~19% wide: the estimates are within one bucket of the true value.
    assert 85 <= row["legacy"]["p50Ms"] <= 118 and 85 <= row["legacy"]["p95Ms"] <= 118
    assert 42 <= row["candidate"]["p50Ms"] <= 59
    assert 1.7 <= row["speedup"] <= 2.3
    assert row["legacy"]["samples"] == 10


def test_noise_learning_ignores_fields_that_come_and_go() -> None:
    learner = NoiseLearner()
    first = {"items": [{"id": 1}], "extra": None}
    second = {"items": [{"id": 1}, {"id": 2}]}  # the list grew, a field vanished: not noise
    assert learner.learn("r", compare(answer(first), answer(second), Rules())) == []
    assert learner.snapshot() == {}


def test_compressed_bodies_are_compared_decoded_and_bounded() -> None:
    import gzip
    import zlib

    data = orjson.dumps({"items": list(range(200)), "name": "Ada"})
    fast = Answer(200, {**JSON, "content-encoding": "gzip"}, gzip.compress(data, compresslevel=1))
    small = Answer(200, {**JSON, "content-encoding": "gzip"}, gzip.compress(data, compresslevel=9))
    plain = Answer(200, JSON, data)
    deflated = Answer(200, {**JSON, "content-encoding": "deflate"}, zlib.compress(data))
    assert fast.body != small.body
    assert compare(fast, small, Rules()).match and compare(fast, plain, Rules()).match
    assert compare(deflated, plain, Rules()).match
    other = Answer(200, {**JSON, "content-encoding": "gzip"}, gzip.compress(orjson.dumps({"items": [], "name": "Ada"})))
    assert [d.where for d in compare(fast, other, Rules()).differences][0].startswith("$.items[")
    # A bomb: 64 MiB of zeros in a few KiB is not inflated past the limit; compared by status only.
    bomb = Answer(200, {"content-type": "text/plain", "content-encoding": "gzip"}, gzip.compress(bytes(64 * 2**20)))
    result = compare(bomb, bomb, Rules())
    assert result.match and not result.body_compared
