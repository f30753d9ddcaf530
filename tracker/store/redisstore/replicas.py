"""The tracker replicas sharing one Redis: who is live (by Redis's clock, which all of them
share), and which one sweeps."""

from __future__ import annotations

from typing import Any

from tracker.store import Replica
from tracker.store.redisstore.base import Scripts, number, text, translating

BEAT = r"""
local now = redis.call('TIME')
local until_ = tonumber(now[1]) + tonumber(now[2]) / 1e6 + tonumber(ARGV[3])
redis.call('ZADD', k('replicas'), until_, ARGV[2])
redis.call('HSET', k('replica', ARGV[2]), 'address', ARGV[4], 'last_seen', ARGV[5],
  'started_at', ARGV[6])
-- Replicas gone for a minute are forgotten.
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', k('replicas'), '-inf', until_ - 60 - ARGV[3])) do
  redis.call('ZREM', k('replicas'), gone)
  redis.call('DEL', k('replica', gone))
end
"""

LIVE = r"""
local now = redis.call('TIME')
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', k('replicas'),
    '(' .. (tonumber(now[1]) + tonumber(now[2]) / 1e6), '+inf')) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGETALL', k('replica', id))
end
return out
"""

SWEEPER = r"""
local current = redis.call('GET', k('sweeper'))
if current and current ~= ARGV[2] then return 0 end
redis.call('SET', k('sweeper'), ARGV[2], 'PX', math.floor(tonumber(ARGV[3]) * 1000))
return 1
"""


@translating
class RedisReplicas:
    def __init__(self, client: Any, scripts: Scripts, prefix: str) -> None:
        self._client = client
        self._p = prefix
        self._beat = scripts.register(BEAT)
        self._live = scripts.register(LIVE)
        self._sweeper = scripts.register(SWEEPER)

    async def beat(self, replica: Replica, ttl: float) -> None:
        await self._beat(
            replica.instance,
            ttl,
            replica.address,
            repr(replica.last_seen),
            repr(replica.started_at),
        )

    async def live(self) -> list[Replica]:
        reply = await self._live()
        replicas = []
        for i in range(0, len(reply), 2):
            raw = reply[i + 1]
            fields = {text(raw[j]): raw[j + 1] for j in range(0, len(raw), 2)}
            replicas.append(
                Replica(
                    text(reply[i]),
                    text(fields.get("address")),
                    number(fields.get("last_seen")),
                    number(fields.get("started_at")),
                )
            )
        return sorted(replicas, key=lambda r: r.address)

    async def sweeper(self, instance: str, ttl: float) -> bool:
        return bool(await self._sweeper(instance, ttl))
