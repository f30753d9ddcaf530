"""Reaching the store: a Redis that wants a password (read from a file) and speaks TLS only, and
a Redis that is down (every call says so at once, and the tracker is not ready)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.certs import write_self_signed
from tests.support.redisserver import RedisServer
from tracker.app import Config, TrackerServer
from tracker.client import NodeAddress, TrackerClient
from tracker.errors import StoreUnavailable, TrackerUnavailable
from tracker.hub import Hub
from tracker.store.config import StoreConfig, open_store

PASSWORD = "correct horse battery staple"
NODE = NodeAddress("n1", "127.0.0.1:8001", "127.0.0.1:7001")


async def ready(http: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 5
    while True:
        async with http.get(url) as r:
            if r.status == 200:
                return
        assert time.monotonic() < deadline, "the tracker does not become ready"
        await asyncio.sleep(0.1)


@pytest.fixture
def guarded_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, Path, Path]]:
    cert, key = write_self_signed(tmp_path, "redis")
    server = RedisServer(tmp_path / "redis", password=PASSWORD, tls=(cert, key))
    server.start()
    secret = tmp_path / "redis-password"
    secret.write_text(PASSWORD + "\n")
    yield server, cert, secret
    server.stop()


async def test_a_store_behind_a_password_and_tls(
    guarded_redis: tuple[RedisServer, Path, Path],
) -> None:
    server, ca, secret = guarded_redis
    assert server.url.startswith("rediss://")
    good = StoreConfig(store=server.url, store_password_file=secret, store_tls_ca=ca)
    store = open_store(good, 10.0, random.Random(1))
    await store.start(Hub())
    try:
        await store.blobs.ensure("sha256:" + "d" * 64, 1, 1)
        assert await store.blobs.count() == 1
    finally:
        await store.close()
    for config in (
        StoreConfig(store=server.url, store_tls_ca=ca),  # no password
        StoreConfig(store=server.url.replace("rediss", "redis"), store_password_file=secret),
    ):
        store = open_store(config, 10.0, random.Random(1))
        await store.start(Hub())
        try:
            with pytest.raises(StoreUnavailable):
                await store.blobs.count()
        finally:
            await store.close()


async def test_a_tracker_whose_store_is_down_answers_at_once_and_is_not_ready(
    tmp_path: Path,
) -> None:
    redis = RedisServer(tmp_path / "redis")
    storage = StoreConfig(store=redis.url)  # nothing listens there
    config = Config(listen="127.0.0.1:0", http_listen="127.0.0.1:0", storage=storage)
    async with TrackerServer(config) as tracker:
        client = TrackerClient(tracker.address, timeout=5)
        try:
            start = time.monotonic()
            with pytest.raises(TrackerUnavailable) as refused:
                await client.join(NODE, "i")
            assert time.monotonic() - start < 2, "the caller waited for its deadline"
            assert isinstance(refused.value, StoreUnavailable)
            async with aiohttp.ClientSession() as http:
                base = f"http://127.0.0.1:{tracker.http_port}"
                async with http.get(f"{base}/healthz") as r:
                    assert r.status == 200
                async with http.get(f"{base}/readyz") as r:
                    assert r.status == 503
                redis.start()
                try:
                    await client.join(NODE, "i")  # the store is back: the tracker serves
                    await ready(http, f"{base}/readyz")
                    async with http.get(f"{base}/metrics") as r:
                        assert "distributed_images_tracker_store_up 1.0" in await r.text()
                finally:
                    redis.stop()
        finally:
            await client.close()
