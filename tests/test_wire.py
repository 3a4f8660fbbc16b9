"""Heads and chunks written by the data plane (pure)."""

from gateway.dataplane.wire import LAST_CHUNK, chunk, json_body, relayed_head, request_head, response_head


def test_heads_keep_order_case_and_duplicates() -> None:
    headers = [("ETag", '"v1"'), ("set-cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Empty", "")]
    expected = b'HTTP/1.1 200 Fine\r\nETag: "v1"\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty: \r\n\r\n'
    assert response_head(200, "Fine", headers) == expected
    raw = [(name.encode(), value.encode()) for name, value in headers]
    assert relayed_head(200, b"Fine", raw) == expected
    assert request_head("GET", "/q?", [(b"Host", b"up")]) == b"GET /q? HTTP/1.1\r\nHost: up\r\n\r\n"


def test_a_head_without_headers_ends_once() -> None:
    assert response_head(204, "No Content", []) == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert response_head(200, "", iter(())) == b"HTTP/1.1 200 \r\n\r\n"
    assert relayed_head(204, b"No Content", []) == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert request_head("GET", "/", []) == b"GET / HTTP/1.1\r\n\r\n"


def test_latin1_values_round_trip() -> None:
    raw = b"caf\xe9 \x80\xff"  # header bytes as the parser handed them over
    assert relayed_head(200, b"OK", [(b"X-Raw", raw)]).split(b"\r\n")[1] == b"X-Raw: caf\xe9 \x80\xff"
    text = raw.decode("latin-1")  # the gateway's own answers: text that encodes back byte for byte
    assert response_head(200, "OK", [("X-Raw", text)]).split(b"\r\n")[1] == b"X-Raw: caf\xe9 \x80\xff"


def test_chunks() -> None:
    assert chunk(b"abc") == b"3\r\nabc\r\n"
    assert chunk(b"x" * 255) == b"ff\r\n" + b"x" * 255 + b"\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"


def test_json_body_carries_the_request_id_only_when_known() -> None:
    assert json_body("e", "m", "rid") == b'{"error":"e","message":"m","requestId":"rid"}'
    assert json_body("e", "m", None) == b'{"error":"e","message":"m"}'
