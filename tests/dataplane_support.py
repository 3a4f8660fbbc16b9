"""Helpers for the data-plane behaviour tests (tests/test_dataplane_*.py): heads as lists of lines,
a recording upstream that also notes which connection each request came on, raw clients bound to
a chosen loopback source address.

Everything here is bytes on real sockets: these tests must keep passing whatever framework (or
none) serves the proxy listener.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tests.support import LoopbackServer, _parse_head, read_body

__all__ = [
    "HANDSHAKE",
    "OK",
    "Recorded",
    "RecordingUpstream",
    "head_lines",
    "open_from",
    "read_head",
    "read_until_close",
]

# A WebSocket handshake's headers (RFC 6455's sample key), for raw upgrade requests.
HANDSHAKE = (
    b"Connection: Upgrade\r\n"
    b"Upgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


def head_lines(raw_head: bytes) -> tuple[str, list[tuple[str, str]]]:
    """A head as its start line and its header lines in order, names with their case, values trimmed."""
    lines = raw_head.decode("latin-1").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name, value.strip(" \t")))
    return lines[0], headers


async def read_head(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)


async def read_until_close(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything until EOF (or a reset); fails if the peer keeps the connection open past ``timeout``."""
    data = bytearray()

    async def drain() -> None:
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionError:
                return
            if not chunk:
                return
            data.extend(chunk)

    await asyncio.wait_for(drain(), timeout)
    return bytes(data)


async def open_from(
    host: str, port: int, source: str = "127.0.0.1", rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client connection from a chosen loopback source address, optionally with a tiny receive
    buffer (so a client that never reads stops the flow after a few kB instead of a few MB)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=2**20)


@dataclass
class Recorded:
    """One request as the upstream received it, and the upstream connection it came on."""

    raw_head: bytes
    body: bytes
    chunked: bool
    conn: int  # 1, 2, ... in the order the upstream accepted connections

    @property
    def start_line(self) -> str:
        return head_lines(self.raw_head)[0]

    @property
    def target(self) -> str:
        return self.start_line.split(" ")[1]

    @property
    def headers(self) -> list[tuple[str, str]]:
        return head_lines(self.raw_head)[1]

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


Answer = Callable[[Recorded, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


class RecordingUpstream(LoopbackServer):
    """An upstream that records each request byte for byte and answers with hand-written bytes.

    ``answers`` maps a request target to the exact bytes written back (``OK`` by default); an
    ``answer`` coroutine may replace that entirely (it returns True to keep the connection).
    ``closed`` counts connections the peer (the proxy) closed; ``conn`` on each record tells which
    connection a request came on.
    """

    def __init__(
        self, answers: dict[str, bytes] | None = None, answer: Answer | None = None, read_bodies: bool = True
    ) -> None:
        super().__init__()
        self.answers = answers or {}
        self.answer = answer
        self.read_bodies = read_bodies  # False: the answer is written before any request body is read
        self.requests: list[Recorded] = []
        self.accepted = 0
        self.closed = 0

    async def start(self) -> RecordingUpstream:
        await self._listen(limit=2**20)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn = self.accepted
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                    self.closed += 1
                    return
                body, chunked = b"", False
                if self.read_bodies:
                    body, chunked = await read_body(reader, _parse_head(head)[1])
                request = Recorded(head, body, chunked, conn)
                self.requests.append(request)
                if self.answer is not None:
                    keep = await self.answer(request, reader, writer)
                else:
                    writer.write(self.answers.get(request.target, OK))
                    await writer.drain()
                    keep = True
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            self.closed += 1
        finally:
            writer.transport.abort()
