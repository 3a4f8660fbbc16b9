"""Differential test: the same raw requests through nginx and through the gateway, to the same kind
of recording upstream. What the upstream receives and what the client receives must agree, after
removing the differences listed in ``ALLOWED_DIFFERENCES`` (the README quotes that list).

Three paths per case:
- ``direct``: the client talks to the recording upstream itself; validates the harness (what is
  sent is what is recorded, what is written is what is read).
- ``nginx``: Debian's nginx with ``proxy_pass`` to a keep-alive upstream, configured like the
  gateway (HTTP/1.1 upstream, no buffering, X-Forwarded-* set). It is the reference: a legacy
  backend that works behind nginx today must work behind the gateway.
- ``gateway``: the in-process gateway, both sides pointing at the recording upstream, flag at 0 %.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, make_config
from tests.dataplane_support import RecordingUpstream, head_lines
from tests.support import read_response

NGINX = "/usr/sbin/nginx"

# Header names (lower case) that may differ between nginx and the gateway, by where they are seen.
#   "drop":      removed from both observations before comparing (one proxy adds it, or both add
#                their own value).
#   "unordered": compared by value (name case and position ignored); nginx writes these itself at
#                fixed positions with canonical case, so only their values can be compared.
#   "set":       like "unordered", and identical repeats count once (nginx collapses them).
# Every other header must agree exactly: same names with the same case, same values, same order,
# same repeats. The status line, the request line and the bodies must agree byte for byte.
FRAMING = "<request body framing>"  # not a header: whether the upstream received the body chunked
ALLOWED_DIFFERENCES: dict[str, dict[str, tuple[str, str]]] = {
    "upstream": {
        # The gateway tags every request with its id; nginx has none.
        "x-request-id": ("drop", "the gateway adds its request id"),
        # Hop-by-hop between proxy and upstream: nginx sends none (proxy_set_header Connection ""),
        # the gateway may send its own keep-alive token.
        "connection": ("drop", "hop-by-hop between proxy and upstream"),
        "keep-alive": ("drop", "hop-by-hop between proxy and upstream"),
        # Both set these to the same values; nginx puts the headers it sets before the client's.
        "host": ("unordered", "set to the upstream's host:port by both; nginx writes it first"),
        "x-forwarded-for": ("unordered", "set by both to the client address; nginx writes it first"),
        "x-forwarded-proto": ("unordered", "set by both; nginx writes it first"),
        "x-forwarded-host": ("unordered", "set by both to the client's Host; nginx writes it first"),
        # The request body's framing: nginx re-frames a chunked body it has already read whole as
        # Content-Length (the gateway streams it on as chunked). The decoded bodies must be equal.
        "content-length": ("drop", "request body framing: nginx may turn chunked into Content-Length"),
        "transfer-encoding": ("drop", "request body framing: nginx may turn chunked into Content-Length"),
        FRAMING: ("drop", "request body framing (chunked or not); the decoded body is compared"),
    },
    "client": {
        # The gateway's own additions to every answer.
        "x-request-id": ("drop", "the gateway adds its request id"),
        "x-content-type-options": ("drop", "security header added by the gateway (security_headers)"),
        "x-frame-options": ("drop", "security header added by the gateway (security_headers)"),
        "content-security-policy": ("drop", "security header added by the gateway (security_headers)"),
        "referrer-policy": ("drop", "security header added by the gateway (security_headers)"),
        "permissions-policy": ("drop", "security header added by the gateway (security_headers)"),
        # nginx replaces the upstream's Server and Date with its own; the gateway removes Server
        # (security_headers.remove) and invents no Date. The cases' answers carry neither.
        "server": ("drop", "nginx adds 'Server: nginx/...'"),
        "date": ("drop", "nginx adds its own Date"),
        # Hop-by-hop between proxy and client.
        "connection": ("drop", "hop-by-hop: nginx adds 'Connection: keep-alive'"),
        "keep-alive": ("drop", "hop-by-hop between proxy and client"),
        # nginx's header filter writes these from parsed values, after Date, with canonical case;
        # the gateway keeps them where and as the upstream wrote them (test_dataplane_heads.py
        # asserts that stricter behaviour against the upstream's bytes).
        "content-type": ("unordered", "nginx rewrites it at a fixed position, canonical case"),
        "content-length": ("set", "nginx writes one, from the parsed value, at a fixed position, canonical case"),
        "transfer-encoding": ("unordered", "nginx re-chunks and writes it itself"),
        "last-modified": ("unordered", "nginx rewrites it at a fixed position, canonical case"),
    },
}


# -- cases ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """Requests sent one after the other on one client connection, and the upstream's answers by target."""

    requests: tuple[bytes, ...]
    answers: dict[str, bytes] = field(default_factory=dict)


def req(line: str, *headers: str, body: bytes = b"") -> bytes:
    return ("\r\n".join([line, *headers]) + "\r\n\r\n").encode("latin-1") + body


H = "Host: gw.example"
OK_TEXT = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"

CASES: dict[str, Case] = {
    "header case, order and repeats": Case(
        (
            req(
                "GET /h HTTP/1.1",
                "host: gw.example",
                "x-lower: a",
                "X-UPPER: B",
                "X-Dup: 1",
                "accept: */*",
                "x-dup: 2",
                "X-MiXeD-CaSe: c, d",
                "X-Dup: 3",
                "X-Empty:",
            ),
        ),
        {
            "/h": b"HTTP/1.1 200 OK\r\n"
            b"x-lower-answer: a\r\n"
            b"Content-Length: 2\r\n"
            b"X-Dup: 1\r\n"
            b"content-type: text/plain\r\n"
            b"x-dup: 2\r\n"
            b"X-MiXeD: e\r\n"
            b"Cache-Control: no-cache\r\n"
            b"X-Dup: 3\r\n"
            b"\r\n"
            b"ok",
        },
    ),
    "empty query": Case((req("GET /q? HTTP/1.1", H), req("GET /? HTTP/1.1", H))),
    "encoded and odd paths": Case(
        (
            req("GET /a%2Fb//c/%7Euser/caf%C3%A9;m=1?x=%2F&y=&y=2&%zz HTTP/1.1", H),
            req("GET //double//slash/./dot/../up HTTP/1.1", H),
            req("GET /plus+sign/at@colon:/comma,?star=*&q=a+b HTTP/1.1", H),
        )
    ),
    "chunked request body": Case(
        (
            req(
                "POST /upload?x=1 HTTP/1.1",
                H,
                "Content-Type: application/octet-stream",
                "Transfer-Encoding: chunked",
                "X-After-Framing: yes",
                body=b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n",
            ),
        )
    ),
    "content-length request body": Case(
        (req("PUT /put HTTP/1.1", H, "Content-Length: 11", "Content-Type: text/plain", body=b"hello world"),)
    ),
    "answer without content-type": Case(
        (req("GET /bare HTTP/1.1", H),),
        {"/bare": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
    ),
    "duplicate set-cookie": Case(
        (req("GET /cookies HTTP/1.1", H),),
        {
            "/cookies": b"HTTP/1.1 200 OK\r\n"
            b"Set-Cookie: a=1; Path=/; HttpOnly\r\n"
            b"Content-Length: 2\r\n"
            b"Set-Cookie: b=2; Max-Age=60\r\n"
            b"set-cookie: c=3; SameSite=Lax\r\n"
            b"\r\n"
            b"ok"
        },
    ),
    "etag and other cased names": Case(
        (req("GET /etag HTTP/1.1", H),),
        {
            "/etag": b"HTTP/1.1 200 OK\r\n"
            b'ETag: "v1-abc"\r\n'
            b"WWW-Authenticate: Basic realm=x\r\n"
            b"X-XSS-Something: 0\r\n"
            b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n"
            b"Content-Length: 2\r\n"
            b"\r\n"
            b"ok"
        },
    ),
    "reason phrase": Case(
        (req("GET /reason HTTP/1.1", H),),
        {"/reason": b"HTTP/1.1 200 Fine Thanks\r\nContent-Length: 2\r\n\r\nok"},
    ),
    "chunked answer": Case(
        (req("GET /chunked HTTP/1.1", H), req("GET /after HTTP/1.1", H)),
        {
            "/chunked": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
            b"X-Trailing-Header: 1\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
        },
    ),
    "204 with stray body bytes": Case(
        (req("GET /nocontent HTTP/1.1", H), req("GET /after HTTP/1.1", H)),
        {"/nocontent": b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\nstray bytes"},
    ),
    "304 with stray body bytes": Case(
        (req("GET /notmodified HTTP/1.1", H, 'If-None-Match: "v1"'), req("GET /after HTTP/1.1", H)),
        {"/notmodified": b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nCache-Control: max-age=60\r\n\r\nstray bytes'},
    ),
    "bytes beyond content-length": Case(
        (req("GET /extra HTTP/1.1", H), req("GET /after HTTP/1.1", H)),
        {"/extra": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nokEXTRA"},
    ),
    "identical duplicate content-length": Case(
        (req("GET /twice HTTP/1.1", H), req("GET /after HTTP/1.1", H)),
        {"/twice": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"},
    ),
    "head with content-length": Case(
        (req("HEAD /head HTTP/1.1", H), req("GET /after HTTP/1.1", H)),
        {"/head": b'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\nETag: "h"\r\n\r\n'},
    ),
}


# -- observation ------------------------------------------------------------------------------


def method_of(request: bytes) -> str:
    return request.split(b" ", 1)[0].decode()


@dataclass
class Seen:
    """What one path produced for one case: the client's view and the upstream's view."""

    client: list[dict[str, Any]]
    upstream: list[dict[str, Any]]


def framing(headers: list[tuple[str, str]], has_body: bool) -> str:
    names = {n.lower(): v.lower() for n, v in headers}
    if "chunked" in names.get("transfer-encoding", ""):
        return "chunked"
    if "content-length" in names:
        return "content-length"
    return "close-delimited" if has_body else "none"


def normalise(headers: list[tuple[str, str]], where: str, extra_drop: frozenset[str] = frozenset()) -> dict[str, Any]:
    rules = ALLOWED_DIFFERENCES[where]
    ordered: list[tuple[str, str]] = []
    unordered: list[tuple[str, str]] = []
    for name, value in headers:
        lower = name.lower()
        rule = rules.get(lower, ("exact", ""))[0]
        if rule == "drop" or lower in extra_drop:
            continue
        if rule == "unordered" or (rule == "set" and (lower, value) not in unordered):
            unordered.append((lower, value))
        elif rule == "set":
            continue
        else:
            ordered.append((name, value))
    return {"headers": ordered, "unordered": sorted(unordered)}


async def run_case(port: int, upstream: RecordingUpstream, case: Case) -> Seen:
    """Send the case's requests one after the other on one connection (reconnecting, and saying so,
    if the proxy closed it) and collect both views."""
    client: list[dict[str, Any]] = []
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in case.requests:
            reconnected = False
            if reader.at_eof():
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                reconnected = True
            writer.write(request)
            await writer.drain()
            method = method_of(request)
            response = await asyncio.wait_for(read_response(reader, method), 5)
            status_line, headers = head_lines(response.raw_head)
            client.append(
                {
                    "reconnected": reconnected,
                    "status_line": status_line,
                    "raw_headers": headers,
                    "framing": framing(headers, bool(response.body)),
                    "body": response.body,
                }
            )
            # A close after the answer shows as EOF: give it a moment to arrive, without waiting on it.
            await asyncio.sleep(0)
    finally:
        writer.close()
    requests = [
        {
            "request_line": r.start_line,
            "raw_headers": r.headers,
            "body": r.body,
            "chunked": r.chunked,
            "conn": r.conn,
        }
        for r in upstream.requests
    ]
    return Seen(client, requests)


def comparable(seen: Seen, extra_drop: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The observation with the allowed differences taken out."""
    framing_dropped = ALLOWED_DIFFERENCES["upstream"].get(FRAMING, ("exact", ""))[0] == "drop"
    return {
        "client": [
            {k: v for k, v in c.items() if k != "raw_headers"} | normalise(c["raw_headers"], "client", extra_drop)
            for c in seen.client
        ],
        "upstream": [
            {k: v for k, v in u.items() if k != "raw_headers" and not (k == "chunked" and framing_dropped)}
            | normalise(u["raw_headers"], "upstream", extra_drop)
            for u in seen.upstream
        ],
    }


# -- nginx ------------------------------------------------------------------------------------


def nginx_binary() -> str:
    if os.path.exists(NGINX):
        return NGINX
    found = shutil.which("nginx")
    if found is None:
        pytest.fail("nginx is not installed: run 'apt-get install -y nginx-light' (the differential test needs it)")
    return found


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream recording {{
        server 127.0.0.1:{upstream_port};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://recording;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_set_header Host 127.0.0.1:{upstream_port};
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
        }}
    }}
}}
"""


class Nginx:
    """nginx in the foreground, one process, every path under ``workdir``; killed on exit."""

    def __init__(self, workdir: Path, upstream_port: int) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.upstream_port = upstream_port
        self._proc: subprocess.Popen[bytes] | None = None

    def error_log(self) -> str:
        try:
            return (self.workdir / "error.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    async def start(self) -> None:
        conf = self.workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.workdir, port=self.port, upstream_port=self.upstream_port))
        self._proc = subprocess.Popen(
            [nginx_binary(), "-p", str(self.workdir), "-e", str(self.workdir / "error.log"), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            if self._proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self._proc.returncode}:\n{self.error_log()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"nginx not listening within 10 s:\n{self.error_log()}") from None
                await asyncio.sleep(0.02)
                continue
            writer.close()
            return

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)


@pytest.fixture
def nginx_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "nginx"
    path.mkdir()
    yield path


async def through_nginx(nginx_dir: Path, case: Case) -> Seen:
    upstream = await RecordingUpstream(answers=dict(case.answers)).start()
    nginx = Nginx(nginx_dir, upstream.port)
    try:
        await nginx.start()
        seen = await run_case(nginx.port, upstream, case)
        errors = [line for line in nginx.error_log().splitlines() if "[alert]" in line or "[emerg]" in line]
        assert not errors, errors
        return seen
    finally:
        nginx.stop()
        await upstream.close()


async def through_gateway(make_gateway: Any, case: Case) -> Seen:
    upstream = await RecordingUpstream(answers=dict(case.answers)).start()
    try:
        gw = await make_gateway(make_config({"legacy": upstream.url, "candidate": upstream.url}))
        return await run_case(int(gw.server.proxy_port), upstream, case)
    finally:
        await upstream.close()


@pytest.fixture
async def direct_upstream() -> AsyncIterator[RecordingUpstream]:
    upstream = await RecordingUpstream().start()
    yield upstream
    await upstream.close()


# -- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
async def test_harness_records_and_replays_exact_bytes(direct_upstream: RecordingUpstream, name: str) -> None:
    """Direct to the recording upstream: the first request arrives as sent, the answer as written."""
    case = CASES[name]
    direct_upstream.answers.update(case.answers)
    seen = await run_case(direct_upstream.port, direct_upstream, Case(case.requests[:1], case.answers))
    first = direct_upstream.requests[0]
    sent = case.requests[0]
    assert first.raw_head == sent[: sent.index(b"\r\n\r\n") + 4]
    answer = case.answers.get(
        first.target, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
    )
    status_line, headers = head_lines(answer[: answer.index(b"\r\n\r\n") + 4])
    assert seen.client[0]["status_line"] == status_line
    assert seen.client[0]["raw_headers"] == headers


@pytest.mark.parametrize("name", list(CASES))
async def test_nginx_is_a_faithful_reference(nginx_dir: Path, direct_upstream: RecordingUpstream, name: str) -> None:
    """nginx changes nothing but the allowed differences: its first exchange of each case equals
    the direct one (Host and X-Forwarded-* left out: the direct path has no proxy to set them)."""
    case = CASES[name]
    direct_upstream.answers.update(case.answers)
    direct = await run_case(direct_upstream.port, direct_upstream, Case(case.requests[:1], case.answers))
    nginx = await through_nginx(nginx_dir, case)
    proxy_set = frozenset({"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})
    want = comparable(direct, proxy_set)
    got = comparable(Seen(nginx.client[:1], nginx.upstream[:1]), proxy_set)
    assert got == want


@pytest.mark.parametrize("name", list(CASES))
async def test_gateway_agrees_with_nginx(nginx_dir: Path, make_gateway: Any, name: str) -> None:
    """The same requests through both proxies: identical views once the allowed differences are out."""
    case = CASES[name]
    nginx = await through_nginx(nginx_dir, case)
    gateway = await through_gateway(make_gateway, case)
    want = comparable(nginx)
    got = comparable(gateway)
    # Host carries each run's own upstream port: compare its shape, not the number.
    for view in (want, got):
        for request in view["upstream"]:
            request["unordered"] = [
                (n, "127.0.0.1:<upstream port>" if n == "host" else v) for n, v in request["unordered"]
            ]
    assert got == want
