"""One pooled keep-alive client session per upstream; client errors mapped to gateway errors.

Sessions never decompress (bodies pass through byte for byte), never follow redirects, never
keep cookies (a shared cookie jar would leak one user's session into another's request) and
never read proxy settings from the environment.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway.config import SIDES, Config, Side, UpstreamConfig
from gateway.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamResetError,
    UpstreamTimeout,
)

__all__ = ["Upstream", "Upstreams", "open_upstreams"]

URL_MEMO = 4096  # distinct request targets whose parsed upstream URL is kept
URL_MEMO_KEY_MAX = 512  # at most ~2 MiB of keys whatever clients send
POOL_WAIT = 5.0  # seconds a request may wait for a free pooled connection
_NO_CONTENT_TYPE: CIMultiDict[None] = CIMultiDict({"Content-Type": None})


class _VerbatimRequest(aiohttp.ClientRequest):
    """Sends exactly the client's headers: no default Accept, Accept-Encoding, User-Agent, and no
    Content-Type invented for a streamed body. (Cheaper than ``skip_auto_headers``, which copies
    the whole header map on every request.)"""

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        self._skip_auto_headers = _NO_CONTENT_TYPE


class Upstream:
    """A backend and its connection pool."""

    def __init__(self, name: Side, config: UpstreamConfig) -> None:
        self.name = name
        self.config = config
        base = config.base
        self._origin = str(base.origin())
        self._base_path = base.path.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}

    async def open(self) -> None:
        cfg = self.config
        connector = aiohttp.TCPConnector(
            limit=cfg.max_connections,
            limit_per_host=cfg.max_connections,
            keepalive_timeout=cfg.keepalive_timeout,
            ttl_dns_cache=10,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=cfg.total_timeout,
                connect=POOL_WAIT + cfg.connect_timeout,
                sock_connect=cfg.connect_timeout,
                sock_read=cfg.read_timeout,
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            request_class=_VerbatimRequest,
            trust_env=False,
            read_bufsize=2**16,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url_for(self, raw_path: str) -> URL:
        """Upstream URL for a client's raw path+query, kept exactly as the client encoded it.

        Parsed URLs are memoised (bounded): APIs see the same paths over and over, and parsing
        is a measurable share of a proxied request.
        """
        if len(raw_path) > URL_MEMO_KEY_MAX:  # long, probably unique targets are not kept
            return URL(f"{self._origin}{self._base_path}{raw_path}", encoded=True)
        url = self._urls.get(raw_path)
        if url is None:
            if len(self._urls) >= URL_MEMO:
                self._urls.clear()
            url = self._urls[raw_path] = URL(f"{self._origin}{self._base_path}{raw_path}", encoded=True)
        return url

    async def send(
        self,
        method: str,
        raw_path: str,
        headers: CIMultiDict[str],
        body: aiohttp.StreamReader | AsyncIterable[bytes] | bytes | None,
    ) -> aiohttp.ClientResponse:
        """Send a request and return once response headers arrived; caller releases it."""
        assert self._session is not None, "upstream used before open()"
        try:
            return await self._session.request(
                method,
                self.url_for(raw_path),
                headers=headers,
                data=body,
                allow_redirects=False,
                compress=None,
            )
        except TimeoutError as exc:
            raise UpstreamTimeout(self.name, "timed out waiting for the upstream") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamConnectError(self.name, "could not connect to the upstream") from exc
        except aiohttp.ClientResponseError as exc:
            err = UpstreamError(self.name, "the upstream sent an invalid response")
            err.kind = "invalid"
            raise err from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError) as exc:
            raise UpstreamResetError(self.name, "the upstream closed the connection") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(self.name, "the upstream exchange failed") from exc


class Upstreams(Mapping[Side, Upstream]):
    def __init__(self, config: Config) -> None:
        self._by_side: dict[Side, Upstream] = {side: Upstream(side, config.upstreams[side]) for side in SIDES}

    def __getitem__(self, side: Side) -> Upstream:
        return self._by_side[side]

    def __iter__(self) -> Iterator[Side]:
        return iter(self._by_side)

    def __len__(self) -> int:
        return len(self._by_side)


@asynccontextmanager
async def open_upstreams(upstreams: Upstreams) -> AsyncIterator[Upstreams]:
    for upstream in upstreams.values():
        await upstream.open()
    try:
        yield upstreams
    finally:
        for upstream in upstreams.values():
            await upstream.close()


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()
