"""Both tracker stores for one test: `STORES` names them, `fresh_store` makes one afresh and
`fresh_storage` configures a tracker server with one (the Redis one on the session's
redis-server, its database emptied first)."""

from __future__ import annotations

import random

import pytest
import redis.asyncio

from tracker.store import Replica, Store
from tracker.store.config import StoreConfig, open_store
from tracker.store.memory import MemoryStore

STORES = ["memory", "redis"]


async def fresh_store(
    request: pytest.FixtureRequest, kind: str, lease_ttl: float, rng: random.Random
) -> Store:
    if kind == "memory":
        return MemoryStore(rng, lease_ttl)
    url = request.getfixturevalue("redis_server").url
    client = redis.asyncio.Redis.from_url(url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    return open_store(StoreConfig(store=url), lease_ttl, rng)


def fresh_storage(request: pytest.FixtureRequest, kind: str) -> StoreConfig:
    """A tracker server's `--store`: in memory, or the session's Redis emptied."""
    if kind == "memory":
        return StoreConfig()
    server = request.getfixturevalue("redis_server")
    server.flush()
    return StoreConfig(store=server.url)


async def live_replica(store: Store, instance: str) -> None:
    """Make `instance` a live replica for an hour (a replica that does not beat serves no
    watches), as the server's own loop would keep it."""
    await store.replicas.beat(Replica(instance, "test", 0.0, 0.0), ttl=3600)
