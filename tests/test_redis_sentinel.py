"""Redis beyond one server: Sentinel URLs for every Redis-backed feature, against a real sentinel."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from aiohttp.test_utils import TestServer

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.redis_client import parse_sentinel_url
from tests.conftest import MakeGateway, RedisServer, _redis_binary, free_port, make_config, wait_for

ENV = {"GATEWAY_LEGACY_URL": "http://127.0.0.1:1", "GATEWAY_CANDIDATE_URL": "http://127.0.0.1:2"}


def test_sentinel_url_parsing() -> None:
    url = parse_sentinel_url("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/2")
    assert url.hosts == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert (url.service, url.db, url.password, url.tls) == ("mymaster", 2, "s3cret", False)
    assert parse_sentinel_url("rediss+sentinel://h:1/svc").tls is True


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://h:26379", "service name"),
        ("redis+sentinel://h:port/svc", "not a number"),
        ("redis+sentinel://h/svc/x", "database"),
        ("http://h/svc", "redis+sentinel"),
    ],
)
def test_bad_redis_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, {**ENV, "REDIS_URL": url})


def test_tls_and_sentinel_urls_are_accepted() -> None:
    assert load_config(None, {**ENV, "REDIS_URL": "rediss://cache.internal:6380/0"}).redis.url
    assert load_config(None, {**ENV, "REDIS_URL": "redis+sentinel://s1:26379,s2:26379/flags"}).redis.url


@pytest.fixture
def sentinel(private_redis: RedisServer, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor cutover 127.0.0.1 {private_redis.port} 1\n"
        "sentinel down-after-milliseconds cutover 1000\n"
    )
    proc = subprocess.Popen(
        [_redis_binary(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    client = redis.Redis(port=port, socket_timeout=0.5)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                if client.sentinel_get_master_addr_by_name("cutover"):
                    break
            except redis.RedisError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis sentinel did not start")
            time.sleep(0.05)
        yield port
    finally:
        client.close()
        proc.kill()
        proc.wait(10)


async def test_gateway_finds_the_master_through_sentinel(
    upstreams: dict[str, TestServer],
    make_gateway: MakeGateway,
    private_redis: RedisServer,
    sentinel: int,
    key_prefix: str,
) -> None:
    url = f"redis+sentinel://127.0.0.1:{sentinel}/cutover/0"
    gw = await make_gateway(make_config(upstreams, redis={"url": url, "key_prefix": key_prefix}))
    await wait_for(lambda: gw.state.store.health().healthy, timeout=5)
    async with gw.admin("PUT", "/api/v1/flags/default", json={"percent": 100}) as resp:
        assert resp.status == 200, await resp.text()
    master = private_redis.client()
    try:
        assert master.hget(f"{key_prefix}flags", "default") == b"100"  # written on the master
    finally:
        master.close()
    async with gw.get("/x") as resp:
        assert (await resp.json())["side"] == "candidate"
