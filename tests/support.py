"""Helpers shared by the end-to-end tests: raw HTTP over asyncio sockets, the gateway as a
subprocess (``python -m gateway run``) and its CLI, its /metrics, and requests by subject.

The raw helpers exist because aiohttp's client and server normalise what they send (re-quoting
paths, choosing framing, adding or refusing headers); these tests need to control and observe
exact bytes on the wire. Everything listens and connects on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict

from tests.conftest import Gateway, free_port

REPO = Path(__file__).resolve().parent.parent


# -- raw HTTP/1.1 -----------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: CIMultiDict[str]
    raw_head: bytes
    body: bytes = b""
    raw_body: bytes = b""  # the body as framed on the wire (chunk sizes included)


@dataclass
class RawRequest:
    method: str
    target: str  # exactly as sent on the request line
    headers: CIMultiDict[str]
    raw_head: bytes
    body: bytes = b""


def _parse_head(raw: bytes) -> tuple[str, CIMultiDict[str]]:
    lines = raw.decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    return lines[0], headers


async def _read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    body = bytearray()
    raw = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        raw += size_line
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            # trailers (none expected) then the final CRLF
            while True:
                line = await reader.readuntil(b"\r\n")
                raw += line
                if line == b"\r\n":
                    return bytes(body), bytes(raw)
        data = await reader.readexactly(size + 2)
        raw += data
        assert data.endswith(b"\r\n"), f"chunk of {size} bytes not followed by CRLF: {data[-10:]!r}"
        body += data[:-2]


async def read_response(reader: asyncio.StreamReader, method: str = "GET") -> RawResponse:
    """Read exactly one response, framed per RFC 9112 §6.3, from ``reader``."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, headers = _parse_head(head)
    _version, status_text, *rest = status_line.split(" ", 2)
    status = int(status_text)
    response = RawResponse(status, rest[0] if rest else "", headers, head)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return response
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        response.body, response.raw_body = await _read_chunked(reader)
    elif "Content-Length" in headers:
        response.body = response.raw_body = await reader.readexactly(int(headers["Content-Length"]))
    else:
        response.body = response.raw_body = await reader.read()
    return response


class RawConnection:
    """One client TCP connection on which requests are written byte for byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> RawConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def request(self, data: bytes, method: str = "GET", timeout: float = 5.0) -> RawResponse:
        self.writer.write(data)
        await self.writer.drain()
        return await asyncio.wait_for(read_response(self.reader, method), timeout)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass

    async def __aenter__(self) -> RawConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def raw_request(port: int, data: bytes, method: str = "GET", timeout: float = 5.0) -> RawResponse:
    async with await RawConnection.open(port) as conn:
        return await conn.request(data, method, timeout)


def abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


RawHandler = Callable[[RawRequest, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


async def read_body(reader: asyncio.StreamReader, headers: CIMultiDict[str]) -> tuple[bytes, bool]:
    """A request's body as its head frames it (chunked or Content-Length), and whether it was chunked."""
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        body, _raw = await _read_chunked(reader)
        return body, True
    if "Content-Length" in headers:
        return await reader.readexactly(int(headers["Content-Length"])), False
    return b"", False


class LoopbackServer:
    """A TCP server on 127.0.0.1 whose connections ``_serve`` handles; ``close`` aborts the ones
    still open and waits for their handlers. The plumbing of the hand-written upstreams."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _listen(self, limit: int = 2**16) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0, limit=limit)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            pending = [t for t in self._tasks if not t.done() and t is not asyncio.current_task()]
            if pending:
                await asyncio.wait(pending, timeout=5)
            await self._server.wait_closed()
            self._server = None


class RawUpstream(LoopbackServer):
    """An HTTP/1.1 'server' whose answers are written by hand.

    The handler gets each parsed request (head + body) and writes whatever bytes it likes; it
    returns True to keep the connection for another request, False to close it.
    ``requests`` records every request received, in order.
    """

    def __init__(self, handler: RawHandler) -> None:
        super().__init__()
        self._handler = handler
        self.requests: list[RawRequest] = []

    async def start(self) -> RawUpstream:
        await self._listen()
        return self

    async def __aenter__(self) -> RawUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, headers = _parse_head(head)
                method, target, _ = request_line.split(" ", 2)
                body, _chunked = await read_body(reader, headers)
                request = RawRequest(method, target, headers, head, body)
                self.requests.append(request)
                keep = await self._handler(request, reader, writer)
                if not keep or writer.transport.is_closing():
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if not writer.transport.is_closing():
                writer.close()


def answering(response: bytes) -> RawHandler:
    """A ``RawUpstream`` handler that answers every request with the same bytes, keeping the connection."""

    async def answer(request: RawRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(response)
        await writer.drain()
        return True

    return answer


# -- the gateway as a subprocess --------------------------------------------------------------


class LoopbackUrls:
    """``url`` and ``admin_url`` of a gateway that listens on 127.0.0.1 at ``port`` and ``admin_port``."""

    port: int
    admin_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


def peak_rss_kb(pid: int) -> int:
    """Peak resident set size (VmHWM) of a live process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


@dataclass
class GatewayProcess(LoopbackUrls):
    """``python -m gateway run`` configured through the environment; always killed on exit."""

    legacy_url: str
    candidate_url: str
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)  # extra `gateway run` arguments, e.g. --config
    cwd: Path = REPO  # `python -m gateway` imports the package found here first
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def start(self) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("GATEWAY_") and k not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")
        }
        env.update(
            GATEWAY_LEGACY_URL=self.legacy_url,
            GATEWAY_CANDIDATE_URL=self.candidate_url,
            GATEWAY_LISTEN=f"127.0.0.1:{self.port}",
            GATEWAY_ADMIN_LISTEN=f"127.0.0.1:{self.admin_port}",
            GATEWAY_LOG_LEVEL="warning",
            GATEWAY_LOG_FORMAT="json",
        )
        env.update(self.extra_env)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", *self.args],
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 15.0) -> None:
        """Poll the admin /readyz and the proxy port until both answer."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode} during start-up:\n{self.log()}")
            try:
                async with session.get(self.admin_url + "/readyz") as resp:
                    if resp.status == 200:
                        # the proxy listener starts after the admin one
                        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                        writer.close()
                        return
            except (aiohttp.ClientError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway not ready within {timeout}s:\n{self.log()}")
            await asyncio.sleep(0.05)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait_exit(self, timeout: float) -> int:
        """Wait (without blocking the event loop) for the process to exit; returns its code."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway still running {timeout}s after the signal:\n{self.log()}")
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def metric_samples(text: str, name: str, **labels: str) -> list[float]:
    """Values of the samples of ``name`` whose labels include ``labels``, from a /metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


async def metric_values(session: aiohttp.ClientSession, admin_url: str, name: str, **labels: str) -> list[float]:
    """The values of the samples of ``name`` matching ``labels`` in the admin ``/metrics``."""
    async with session.get(admin_url + "/metrics") as resp:
        assert resp.status == 200
        return metric_samples(await resp.text(), name, **labels)


async def metric_value(session: aiohttp.ClientSession, admin_url: str, name: str, **labels: str) -> float:
    """A sample's value from the admin ``/metrics`` (0.0 when the labelled child does not exist yet)."""
    values = await metric_values(session, admin_url, name, **labels)
    return values[0] if values else 0.0


# -- the CLI ----------------------------------------------------------------------------------


async def gateway_cli(*args: str, admin: str | None, token: str | None = "test-admin-token") -> tuple[int, str, str]:
    """``python -m gateway ARGS`` with a clean GATEWAY_* environment; returns (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    if admin is not None:
        env["GATEWAY_ADMIN_URL"] = admin
    if token is not None:
        env["GATEWAY_ADMIN_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def gateway_cli_out(*args: str) -> str:
    """The stdout of a CLI call that must succeed (its arguments name the admin URL)."""
    code, out, err = await gateway_cli(*args, admin=None)
    assert code == 0, err
    return out


# -- requests by subject ----------------------------------------------------------------------


def bearer(sub: str) -> dict[str, str]:
    """An ``Authorization`` header whose JWT payload carries ``sub`` (the gateway reads, never verifies, it)."""
    payload = base64.urlsafe_b64encode(orjson.dumps({"sub": sub})).rstrip(b"=").decode()
    return {"Authorization": f"Bearer h.{payload}.s"}


async def side_of(gw: Gateway, path: str = "/api/v1/users", method: str = "GET", **kwargs: Any) -> str:
    async with gw.request(method, path, **kwargs) as resp:
        assert resp.status == 200, await resp.text()
        side: str = (await resp.json())["side"]
        return side


async def set_flag(gw: Gateway, flag: str, percent: int) -> None:
    async with gw.admin("PUT", f"/api/v1/flags/{flag}", json={"percent": percent, "reason": "test"}) as resp:
        assert resp.status == 200, await resp.text()
