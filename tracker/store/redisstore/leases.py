"""Leases in Redis: one hash per blob (chunk -> lease), each holder's set, a sorted set of expiry
times, and the counts of leases still fetching. Every change is one script, so a grant on one
replica cannot interleave with a grant on another: at most one lease per chunk, cluster-wide.
The rules are those of `tracker.leases.LeaseTable`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tracker.leases import FIRST_RENEWAL, Lease
from tracker.store import Caps
from tracker.store.redisstore.base import Scripts, indices_text, number, text, translating

# Shared by the scripts that end leases (`raw`: the lease as stored, when read already).
RELEASE = r"""
local function release(d, c, holder, raw)
  local lease = lease_of(raw or redis.call('HGET', k('l', d), c))
  if not lease or (holder ~= '' and lease.holder ~= holder) then return nil end
  redis.call('HDEL', k('l', d), c)
  redis.call('SREM', k('lh', lease.holder), d .. '|' .. c)
  redis.call('ZREM', k('ldl'), d .. '|' .. c)
  if not lease.fetched then
    if redis.call('HINCRBY', k('fetching'), d, -1) <= 0 then
      redis.call('HDEL', k('fetching'), d)
    end
    redis.call('DECR', k('fetching:total'))
  end
  return {d, c, lease_text(lease)}
end
"""

GRANT = r"""
local holder, d, now, first = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local per_node, per_blob, total = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local unconfirmed = ARGV[9] == '1'  -- also a chunk with one source and no metainfo
local suspected = ARGV[10] == '1'  -- also a chunk with one source whose pieces fail
if redis.call('EXISTS', k('node', holder)) == 0 then return {} end
local silent = redis.call('SMEMBERS', k('silent'))
local mine = leases_on(holder, d)
local blob = num(redis.call('HGET', k('fetching'), d))
local all = num(redis.call('GET', k('fetching:total')))
local held = redis.call('GET', k('mc', d, holder)) or ''
local chunks = {}
for i = 11, #ARGV do chunks[#chunks + 1] = ARGV[i] end
local leased = hmget(k('l', d), chunks)
local sources = source_counts(d, chunks, silent)
local granted = {}
for i, c in ipairs(chunks) do
  if mine >= per_node or blob >= per_blob or all >= total then break end
  if not leased[i] and not bit_of(held, tonumber(c)) and (sources[i] == 0 or (sources[i] == 1
      and (suspected or (unconfirmed and redis.call('HEXISTS', k('mi', d), c) == 0)))) then
    local lease = {holder = holder, granted = now, expires = now + first, progress = 0,
                   renewals = 0, fetched = false, heard = false}
    redis.call('HSET', k('l', d), c, lease_text(lease))
    redis.call('SADD', k('lh', holder), d .. '|' .. c)
    redis.call('ZADD', k('ldl'), lease.expires, d .. '|' .. c)
    redis.call('HINCRBY', k('fetching'), d, 1)
    redis.call('INCR', k('fetching:total'))
    mine, blob, all = mine + 1, blob + 1, all + 1
    granted[#granted + 1] = tonumber(c)
  end
end
return granted
"""

RENEW = r"""
local holder, d, c = ARGV[2], ARGV[3], ARGV[4]
local progress, now, ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local lease = lease_of(redis.call('HGET', k('l', d), c))
if not lease or lease.holder ~= holder or lease.expires <= now then return false end
if not lease.heard then
  lease.heard = true
  lease.expires = math.max(lease.expires, lease.granted + ttl)
end
if progress > lease.progress then
  lease.progress = progress
  lease.renewals = lease.renewals + 1
  lease.expires = now + ttl
end
redis.call('HSET', k('l', d), c, lease_text(lease))
redis.call('ZADD', k('ldl'), lease.expires, d .. '|' .. c)
return lease_text(lease)
"""

FETCHED = r"""
local d, c = ARGV[2], ARGV[3]
local lease = lease_of(redis.call('HGET', k('l', d), c))
if not lease or lease.fetched then return 0 end
lease.fetched = true
redis.call('HSET', k('l', d), c, lease_text(lease))
if redis.call('HINCRBY', k('fetching'), d, -1) <= 0 then redis.call('HDEL', k('fetching'), d) end
redis.call('DECR', k('fetching:total'))
return 1
"""

RELEASE_CHUNKS = (
    RELEASE
    + r"""
local d, holder = ARGV[2], ARGV[3]
local out = {}
if redis.call('EXISTS', k('l', d)) == 0 then return out end
local chunks = {}
for i = 4, #ARGV do chunks[#chunks + 1] = ARGV[i] end
local leases = hmget(k('l', d), chunks)
for i, c in ipairs(chunks) do
  if leases[i] then
    local ended = release(d, c, holder, leases[i])
    if ended then out[#out + 1] = ended end
  end
end
return out
"""
)

RELEASE_HOLDER = (
    RELEASE
    + r"""
local out = {}
for _, key in ipairs(redis.call('SMEMBERS', k('lh', ARGV[2]))) do
  local d, c = string.match(key, '^(.*)|(%d+)$')
  local ended = release(d, c, ARGV[2])
  if ended then out[#out + 1] = ended end
end
return out
"""
)

EXPIRE = (
    RELEASE
    + r"""
local now = tonumber(ARGV[2])
local out = {}
for _, key in ipairs(redis.call('ZRANGEBYSCORE', k('ldl'), '-inf', now, 'LIMIT', 0, 1000)) do
  local d, c = string.match(key, '^(.*)|(%d+)$')
  local lease = lease_of(redis.call('HGET', k('l', d), c))
  if not lease then
    redis.call('ZREM', k('ldl'), key)
  elseif lease.expires <= now then
    out[#out + 1] = release(d, c, '')
  end
end
return out
"""
)

COUNT = r"""
return leases_on(ARGV[2], ARGV[3])
"""


def lease_of(digest: str, chunk: int, raw: bytes | str) -> Lease:
    holder, granted, expires, progress, renewals, fetched, heard = text(raw).split("\t")
    return Lease(
        holder,
        digest,
        chunk,
        float(granted),
        float(expires),
        int(progress),
        int(renewals),
        fetched == "1",
        heard == "1",
    )


def ended(reply: list[Any]) -> list[Lease]:
    """Leases as the release scripts return them: digest, chunk, lease."""
    return [lease_of(text(d), int(c), raw) for d, c, raw in reply]


@translating
class RedisLeases:
    def __init__(self, client: Any, scripts: Scripts, prefix: str, ttl: float) -> None:
        self._client = client
        self._p = prefix
        self.ttl = ttl
        self.first_renewal = min(ttl, FIRST_RENEWAL)
        self._grant = scripts.register(GRANT)
        self._renew = scripts.register(RENEW)
        self._fetched = scripts.register(FETCHED)
        self._release = scripts.register(RELEASE_CHUNKS)
        self._release_holder = scripts.register(RELEASE_HOLDER)
        self._expire = scripts.register(EXPIRE)
        self._count = scripts.register(COUNT)

    async def grant(
        self,
        holder: str,
        digest: str,
        chunks: Sequence[int],
        now: float,
        caps: Caps,
        unconfirmed: bool = False,
        suspected: bool = False,
    ) -> list[int]:
        if not chunks:
            return []
        granted = await self._grant(
            holder,
            digest,
            repr(now),
            self.first_renewal,
            caps.per_node,
            caps.per_blob,
            caps.total,
            int(unconfirmed),
            int(suspected),
            *indices_text(chunks),
        )
        return [int(c) for c in granted]

    async def get(self, digest: str, chunk: int) -> Lease | None:
        raw = await self._client.hget(self._p + "l:" + digest, str(chunk))
        return None if raw is None else lease_of(digest, chunk, raw)

    async def renew(
        self, holder: str, digest: str, chunk: int, progress: int, now: float
    ) -> Lease | None:
        raw = await self._renew(holder, digest, chunk, progress, repr(now), self.ttl)
        return lease_of(digest, chunk, raw) if raw else None

    async def fetched(self, digest: str, chunk: int) -> bool:
        return bool(await self._fetched(digest, chunk))

    async def release(self, digest: str, chunks: Sequence[int], holder: str = "") -> list[Lease]:
        if not chunks:
            return []
        return ended(await self._release(digest, holder, *indices_text(chunks)))

    async def release_holder(self, holder: str) -> list[Lease]:
        return ended(await self._release_holder(holder))

    async def expire(self, now: float) -> list[Lease]:
        return ended(await self._expire(repr(now)))

    async def fetching(self, digest: str = "") -> int:
        if digest:
            return int(number(await self._client.hget(self._p + "fetching", digest)))
        return int(number(await self._client.get(self._p + "fetching:total")))

    async def leased(self, digest: str) -> bool:
        return bool(await self._client.exists(self._p + "l:" + digest))

    async def held_by(self, holder: str) -> list[Lease]:
        keys = sorted(text(k) for k in await self._client.smembers(self._p + "lh:" + holder))
        chunks = [(d, int(c)) for d, _, c in (key.rpartition("|") for key in keys)]
        return [
            lease
            for lease in [await self.get(d, c) for d, c in chunks]
            if lease is not None and lease.holder == holder
        ]

    async def count(self, holder: str, digest: str) -> int:
        return int(await self._count(holder, digest))

    async def all(self) -> list[Lease]:
        keys = [text(k) for k in await self._client.zrange(self._p + "ldl", 0, -1)]
        found = []
        for key in keys:
            digest, _, chunk = key.rpartition("|")
            lease = await self.get(digest, int(chunk))
            if lease is not None:
                found.append(lease)
        return found

    async def total(self) -> int:
        return int(await self._client.zcard(self._p + "ldl"))
