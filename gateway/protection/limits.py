"""Request body limits while streaming: a size cap and a read timeout against slow senders.

A declared ``Content-Length`` over the cap is refused before the upstream is contacted. A
chunked body is counted as it streams and cut the moment it passes the cap: nothing is ever
buffered to measure it. The upstream then sees its request aborted mid-body (never a complete
oversized one) and the client gets 413. A client that goes silent mid-body for longer than
``body_read_timeout`` is treated the same way with 408, so a slow sender holds an upstream
connection for a bounded time only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from gateway.errors import BodyRejected
from gateway.protection.bodypeek import ChunkReader

__all__ = ["BodyLimit"]


class BodyLimit:
    """Wraps one request's body stream; ``rejected`` tells the proxy why the upload broke off."""

    __slots__ = ("_content", "_max_bytes", "_timeout", "rejected")

    def __init__(self, content: ChunkReader, max_bytes: int | None, timeout: float | None) -> None:
        self._content = content
        self._max_bytes = max_bytes
        self._timeout = timeout
        self.rejected: BodyRejected | None = None

    async def stream(self) -> AsyncIterator[bytes]:
        received = 0
        while True:
            try:
                async with asyncio.timeout(self._timeout):
                    chunk = await self._content.readany()
            except TimeoutError:
                self.rejected = BodyRejected(408, "request_timeout", "the request body stopped arriving")
                raise self.rejected from None
            if not chunk:
                return
            received += len(chunk)
            if self._max_bytes is not None and received > self._max_bytes:
                self.rejected = BodyRejected(413, "body_too_large", f"the request body exceeds {self._max_bytes} bytes")
                raise self.rejected
            yield chunk
