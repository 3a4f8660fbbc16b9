"""The shadow sender's client sessions, one per upstream; client errors mapped to gateway errors.

Proxied requests never come here: they go through the data plane's raw pools
(``gateway.dataplane.pool``). Shadow copies are few, off the request path, and need a whole
answer to compare, which is what aiohttp's client does well. Sessions never decompress
(bodies pass through byte for byte), never follow redirects, never keep cookies (a shared
cookie jar would leak one user's session into another's request) and never read proxy
settings from the environment.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from gateway.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamResetError,
    UpstreamTimeout,
)
from gateway.fields import SIDES, Side

if TYPE_CHECKING:
    from gateway.config import Config, UpstreamConfig

__all__ = ["Upstream", "Upstreams", "open_upstreams"]

POOL_WAIT = 5.0  # seconds a shadow request may wait for a free pooled connection
# Sent exactly as the client's headers were: no default Accept, Accept-Encoding, User-Agent,
# and no Content-Type invented for a replayed body.
_SKIP_AUTO_HEADERS = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})


class Upstream:
    """A backend and its connection pool."""

    def __init__(self, name: Side, config: UpstreamConfig) -> None:
        self.name = name
        self.config = config
        base = config.base
        self._origin = str(base.origin())
        self._base_path = base.raw_path.rstrip("/")  # still percent-encoded: url_for marks it encoded
        self._session: aiohttp.ClientSession | None = None

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
            trust_env=False,
            read_bufsize=2**16,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url_for(self, raw_path: str) -> URL:
        """Upstream URL for a client's raw path+query, kept exactly as the client encoded it."""
        return URL(f"{self._origin}{self._base_path}{raw_path}", encoded=True)

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
                skip_auto_headers=_SKIP_AUTO_HEADERS,
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
