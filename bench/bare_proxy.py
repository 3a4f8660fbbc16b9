"""A bare aiohttp + uvloop streaming reverse proxy: the baseline the gateway is measured against.

It does the minimum any correct proxy must do (one pooled keep-alive ClientSession, drop
hop-by-hop headers, stream the body back) and nothing else: no routing, bucketing, metrics or
access log. The gap between this and ``gateway run`` is the price of the gateway's features.

    python bench/bare_proxy.py --port 8000 --upstream http://127.0.0.1:8001 [--processes 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import signal

import aiohttp
import uvloop
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
SESSION = web.AppKey("session", aiohttp.ClientSession)
ORIGIN = web.AppKey("origin", str)


def _copy(headers: CIMultiDictProxy[str], drop: frozenset[str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)


async def handle(request: web.Request) -> web.StreamResponse:
    """Forward one request and stream the answer back chunk by chunk."""
    session = request.app[SESSION]
    url = URL(request.app[ORIGIN] + request.raw_path, encoded=True)
    body = request.content if request.body_exists else None
    try:
        upstream = await session.request(
            request.method,
            url,
            headers=_copy(request.headers, HOP_BY_HOP | {"host"}),
            data=body,
            allow_redirects=False,
        )
    except aiohttp.ClientError:
        return web.Response(status=502, text="bad gateway")
    try:
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=_copy(upstream.headers, HOP_BY_HOP)
        )
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(2**16):
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        upstream.release()


async def _serve(port: int, upstream: str, reuse_port: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = web.Application()
    app[ORIGIN] = str(URL(upstream).origin())
    app[SESSION] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        trust_env=False,
    )
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_port=reuse_port, backlog=2048).start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await app[SESSION].close()


def _run(port: int, upstream: str, reuse_port: bool) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(port, upstream, reuse_port))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="http://host:port of the upstream")
    parser.add_argument("--processes", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    args = parser.parse_args()
    if args.processes <= 1:
        _run(args.port, args.upstream, reuse_port=False)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_run, args=(args.port, args.upstream, True)) for _ in range(args.processes)]
    for proc in procs:
        proc.start()

    def _forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    for proc in procs:
        proc.join()


if __name__ == "__main__":
    main()
