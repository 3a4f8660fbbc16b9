"""Shared fixtures: a real redis-server on a free loopback port, real upstreams, real gateways.

Redis is never mocked. The session-wide server is shared through unique key prefixes; tests
that stop or restart Redis take ``private_redis``, a server of their own.
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.compiled import stale_modules
from gateway.config import Config
from gateway.dataplane.listener import ProxyListener
from gateway.server import GatewayServer
from tests.pg_support import postgres  # noqa: F401 - the session's PostgreSQL, for data-check tests


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to test stale compiled modules: a compiled module shadows its .py, so an edit to the
    source would silently go untested."""
    stale = stale_modules()
    if stale:
        raise pytest.UsageError(
            f"compiled modules are older than their source or no longer built ({', '.join(stale)}): "
            "delete gateway/**/*.so and rebuild with `python3 setup.py build_ext --inplace` "
            "(or leave them deleted to test pure Python)"
        )


# Support modules whose fixtures every test module may take (pki, faulty, login_backend).
pytest_plugins = ["aiohttp", "tests.tls_support", "tests.safety_support", "tests.ratelimit_support"]


_RECENT_PORTS: collections.deque[int] = collections.deque(maxlen=512)


def free_port() -> int:
    """A loopback port nothing listens on, and not one handed out recently: the kernel may give
    the same just-closed port twice in a row (a gateway's proxy and admin ports once collided)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _RECENT_PORTS:
            _RECENT_PORTS.append(port)
            return port


def _redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], check=False, capture_output=True)
        binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run 'apt-get install -y redis-server' (the tests need a real one)")
    return binary


class RedisServer:
    """A redis-server process we own: start, stop (kill), restart on the same port."""

    def __init__(self, workdir: Path, *, aof: bool = False) -> None:
        self.aof = aof  # append-only file, fsynced on every write: a SIGKILL loses nothing
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [
                _redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.aof else "no",
                "--appendfsync",
                "always",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        client = redis.Redis(port=self.port, socket_timeout=0.5)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    if time.monotonic() > deadline or self._proc.poll() is not None:
                        raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)


@pytest.fixture(scope="session", autouse=True)
def _state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Local overrides (rollbacks taken while Redis is down) go to a temporary XDG state dir,
    never to the home directory; gateway subprocesses inherit it."""
    old = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("xdg-state"))
    yield
    if old is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = old


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def key_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}:"


# -- upstreams --------------------------------------------------------------------------------


def echo_app(side: str) -> web.Application:
    """An upstream that reports what it received. Extra endpoints for the failure paths."""

    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        return web.json_response(
            {
                "side": side,
                "method": request.method,
                "path": request.path,
                "raw_path": request.raw_path,
                "query": request.query_string,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body_len": len(body),
                "body": body[:1000].decode("utf-8", "replace"),
            },
            headers={"X-Side": side},
        )

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.Response(status=code, headers={"X-Side": side})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.Response(text=f"slow {side}", headers={"X-Side": side})

    async def reset(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.abort()
        return web.Response(text="unreachable")

    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/slow", slow)
    app.router.add_get("/reset", reset)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.fixture
async def upstreams(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> dict[str, TestServer]:
    legacy = await aiohttp_server(echo_app("legacy"))
    candidate = await aiohttp_server(echo_app("candidate"))
    return {"legacy": legacy, "candidate": candidate}


def make_config(upstreams: dict[str, Any], upstream: dict[str, Any] | None = None, **overrides: Any) -> Config:
    """A config on free loopback ports pointing at the given upstream servers (or URLs);
    ``upstream`` adds the same ``upstreams.<side>`` keys (timeouts, pool, TLS) to both sides."""

    def url(value: Any) -> str:
        return value if isinstance(value, str) else str(value.make_url("/")).rstrip("/")

    data: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin": {"listen": "127.0.0.1:0", "token": "test-admin-token"},
        "upstreams": {
            side: {"url": url(upstreams[side]), "connect_timeout": 1, "read_timeout": 5, **(upstream or {})}
            for side in ("legacy", "candidate")
        },
        "drain_timeout": 5,
        "log": {"access_log": False},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Config.model_validate(data)


class Gateway:
    """A running in-process gateway with clients for both of its listeners."""

    def __init__(self, server: GatewayServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session

    @property
    def state(self) -> Any:
        return self.server.state

    @property
    def safety(self) -> Any:  # Any like ``state``: tests wrap its methods
        """The safety net (the admin API reaches it under ``gateway.keys.SAFETY``; it is not in the state)."""
        return self.server.parts.safety

    @property
    def listener(self) -> ProxyListener:
        """The data plane's listener, for tests that look at its pools and counters."""
        listener = self.server.listener
        assert listener is not None, "the gateway has started"
        return listener

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.proxy_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.server.admin_port}"

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.session.get(self.url + path, **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.session.request(method, self.url + path, **kwargs)

    def admin(self, method: str, path: str, token: str | None = "test-admin-token", **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.session.request(method, self.admin_url + path, headers=headers, **kwargs)


MakeGateway = Callable[[Config], Awaitable[Gateway]]
"""The ``make_gateway`` fixture: starts a gateway for a config; stopped at teardown."""


@pytest.fixture
async def make_gateway() -> AsyncIterator[MakeGateway]:
    started: list[Gateway] = []

    async def factory(config: Config) -> Gateway:
        server = GatewayServer(config)
        await server.start()
        session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False)
        gateway = Gateway(server, session)
        started.append(gateway)
        return gateway

    yield factory
    for gateway in reversed(started):
        await gateway.session.close()
        await gateway.server.stop()


async def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> float:
    """Poll ``predicate`` (sync or async) until truthy; returns seconds waited, fails at the deadline."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return loop.time() - start
        if loop.time() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


T = TypeVar("T")


def poll(
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    interval: float = 0.05,
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """``wait_for`` for code that runs in a thread (browsers, blocking clients): polls ``predicate``
    until truthy and returns its value; an exception in ``ignore`` counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except ignore:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
