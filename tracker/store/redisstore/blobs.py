"""Blobs in Redis: shape, metainfo, requesters, fan-out members, republish asks and watches."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from tracker.store.redisstore.base import Scripts, indices_text, number, text, translating

ENSURE = r"""
local d = ARGV[2]
if redis.call('HSETNX', k('b', d), 'size', ARGV[3]) == 1 then
  redis.call('HSET', k('b', d), 'chunks', ARGV[4])
  redis.call('SADD', k('blobs'), d)
end
return redis.call('HMGET', k('b', d), 'size', 'chunks')
"""

PUBLISH = r"""
local d, c = ARGV[2], ARGV[3]
if redis.call('HSETNX', k('mi', d), c, ARGV[4]) == 1 then return false end
return redis.call('HGET', k('mi', d), c)
"""

REQUEST = r"""
local d, size, count, node, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local known = redis.call('HMGET', k('b', d), 'size', 'chunks')
if known[1] and (known[1] ~= size or known[2] ~= count) then return {known[1], known[2], 1} end
local asked = redis.call('SISMEMBER', k('nr', node), d) == 1
if not asked and redis.call('SCARD', k('nr', node)) >= tonumber(ARGV[7]) then
  return {known[1] or size, known[2] or count, 0}
end
if not known[1] then
  redis.call('HSET', k('b', d), 'size', size, 'chunks', count)
  redis.call('SADD', k('blobs'), d)
end
if not asked then
  redis.call('ZADD', k('rq', d), 'NX', now, node)
  redis.call('SADD', k('nr', node), d)
end
redis.call('HSET', k('rqt', d), node, now)
return {size, count, 1}
"""

FORGET_REQUESTER = r"""
local function forget(d, node)
  redis.call('ZREM', k('rq', d), node)
  redis.call('HDEL', k('rqt', d), node)
  redis.call('SREM', k('nr', node), d)
end
"""

FORGET_ONE = (
    FORGET_REQUESTER
    + r"""
forget(ARGV[2], ARGV[3])
"""
)

SET_FANOUT = r"""
local d, c = ARGV[2], ARGV[3]
redis.call('DEL', k('fo', d, c))
if #ARGV > 3 then
  redis.call('HSET', k('fo', d, c), unpack(ARGV, 4))
  redis.call('SADD', k('fos', d), c)
else
  redis.call('SREM', k('fos', d), c)
end
"""

JOIN_FANOUT = r"""
local d, c, node = ARGV[2], ARGV[3], ARGV[4]
local key = k('fo', d, c)
if redis.call('HEXISTS', key, node) == 1 then return 1 end
if redis.call('HLEN', key) >= tonumber(ARGV[6]) then return 0 end
redis.call('HSET', key, node, ARGV[5])
redis.call('SADD', k('fos', d), c)
return 1
"""

# The chunk's one relay from a seed: unless it has members already, or the node relays `window`
# chunks that it does not hold whole yet (read from its bitmaps), over the blobs it asked about;
# a membership from before `stale_before` on a chunk it holds none of does not count.
JOIN_RELAY = r"""
local d, c, node, now, window = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local stale_before = tonumber(ARGV[7])
local key = k('fo', d, c)
if redis.call('HLEN', key) > 0 then return redis.call('HEXISTS', key, node) end
local relaying = 0
for _, asked in ipairs(redis.call('SMEMBERS', k('nr', node))) do
  for _, other in ipairs(redis.call('SMEMBERS', k('fos', asked))) do
    local since = redis.call('HGET', k('fo', asked, other), node)
    if since and redis.call('GETBIT', k('mc', asked, node), other) == 0
        and (tonumber(since) >= stale_before
             or redis.call('GETBIT', k('mp', asked, node), other) == 1) then
      relaying = relaying + 1
    end
  end
end
if relaying >= window then return 0 end
redis.call('HSET', key, node, now)
redis.call('SADD', k('fos', d), c)
return 1
"""

# A chunk's unconfirmed metainfo: its fingerprint and who published it, until a second node
# publishes the same (then forgotten); it goes with the blob.
WITNESS = r"""
local d, c, fingerprint, node = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local waiting = redis.call('HGET', k('wit', d), c)
if waiting then
  local known, by = string.match(waiting, '^(%x+) (.*)$')
  if known == fingerprint and by ~= node then
    redis.call('HDEL', k('wit', d), c)
    return 1
  end
end
redis.call('HSET', k('wit', d), c, fingerprint .. ' ' .. node)
return 0
"""

ASK_REPUBLISH = r"""
local d, c, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local last = redis.call('HGET', k('ra', d), c)
if last and now - tonumber(last) < tonumber(ARGV[5]) then return 0 end
redis.call('HSET', k('ra', d), c, ARGV[4])
return 1
"""

# Watches: registered by the replica serving the stream, under a watch id `<replica>:<n>`.
WATCHES = r"""
local function unwatch(d, node, id)
  redis.call('HDEL', k('nw', node), id)
  redis.call('HDEL', k('w', d), id)
  if redis.call('HLEN', k('w', d)) == 0 then redis.call('ZREM', k('watched'), d) end
end

-- Whether the replica that serves a watch beats (by Redis's clock: replicas may disagree).
local function live(id)
  local replica = string.match(id, '^(.*):%d+$')
  local until_ = redis.call('ZSCORE', k('replicas'), replica)
  local now = redis.call('TIME')
  return until_ and tonumber(until_) > tonumber(now[1]) + tonumber(now[2]) / 1e6
end
"""

ADD_WATCH = r"""
local d, node, id, ahead = ARGV[2], ARGV[3], ARGV[4], ARGV[5] == '1'
redis.call('HSET', k('w', d), id, node)
redis.call('HSET', k('nw', node), id, d)
local order = redis.call('INCR', k('watchseq'))
if ahead then order = order - AHEAD end
redis.call('ZADD', k('watched'), 'NX', order, d)
""".replace("AHEAD", str(1 << 52))  # exact in a double; orders below stay ahead

REMOVE_WATCH = (
    WATCHES
    + r"""
unwatch(ARGV[2], ARGV[3], ARGV[4])
"""
)

WATCHERS = (
    WATCHES
    + r"""
local d = ARGV[2]
local seen, out = {}, {}
local entries = redis.call('HGETALL', k('w', d))
for i = 1, #entries, 2 do
  local node = entries[i + 1]
  if not seen[node] and live(entries[i]) then
    seen[node] = true
    out[#out + 1] = node
  end
end
return out
"""
)

# The watches of replicas that stopped beating (killed): their streams are gone.
REAP_WATCHES = (
    WATCHES
    + r"""
for _, d in ipairs(redis.call('ZRANGE', k('watched'), 0, -1)) do
  local entries = redis.call('HGETALL', k('w', d))
  for i = 1, #entries, 2 do
    if not live(entries[i]) then unwatch(d, entries[i + 1], entries[i]) end
  end
end
"""
)

FORGET_NODE = (
    FORGET_REQUESTER
    + WATCHES
    + r"""
local node = ARGV[2]
local out = {}
for _, d in ipairs(redis.call('SMEMBERS', k('nr', node))) do
  forget(d, node)
  out[#out + 1] = d
end
local watches = redis.call('HGETALL', k('nw', node))
for i = 1, #watches, 2 do
  unwatch(watches[i + 1], node, watches[i])
  out[#out + 1] = watches[i + 1]
end
redis.call('DEL', k('nr', node), k('nw', node))
return out
"""
)

# What is known of a blob's chunks while nobody holds or leases any (holders' and leases' own
# keys are empty then): DROP_IF_IDLE and RESHAPE forget it.
FORGET_CHUNKS = r"""
local function forget_chunks(d)
  for _, c in ipairs(redis.call('SMEMBERS', k('fos', d))) do redis.call('DEL', k('fo', d, c)) end
  redis.call('DEL', k('mi', d), k('fos', d), k('ra', d), k('cc', d), k('pn', d), k('hf', d),
    k('wit', d))
end
"""

DROP_IF_IDLE = (
    FORGET_CHUNKS
    + r"""
local d = ARGV[2]
if redis.call('EXISTS', k('w', d)) == 1 or redis.call('EXISTS', k('rq', d)) == 1
    or redis.call('EXISTS', k('bh', d)) == 1 or redis.call('EXISTS', k('l', d)) == 1 then
  return 0
end
forget_chunks(d)
redis.call('DEL', k('b', d), k('rqt', d))
redis.call('SREM', k('blobs'), d)
return 1
"""
)

RESHAPE = (
    FORGET_CHUNKS
    + r"""
local d = ARGV[2]
if redis.call('EXISTS', k('b', d)) == 1 and redis.call('EXISTS', k('bh', d)) == 0
    and redis.call('EXISTS', k('l', d)) == 0 then
  forget_chunks(d)
  redis.call('HSET', k('b', d), 'size', ARGV[3], 'chunks', ARGV[4])
end
return redis.call('HMGET', k('b', d), 'size', 'chunks')
"""
)


def shape_of(raw: Sequence[Any]) -> tuple[int, int] | None:
    size, chunks = raw
    return None if size is None else (int(size), int(chunks))


@translating
class RedisBlobs:
    def __init__(self, client: Any, scripts: Scripts, prefix: str) -> None:
        self._client = client
        self._p = prefix
        self._ensure = scripts.register(ENSURE)
        self._publish = scripts.register(PUBLISH)
        self._request = scripts.register(REQUEST)
        self._forget_requester = scripts.register(FORGET_ONE)
        self._set_fanout = scripts.register(SET_FANOUT)
        self._join_fanout = scripts.register(JOIN_FANOUT)
        self._ask_republish = scripts.register(ASK_REPUBLISH)
        self._join_relay = scripts.register(JOIN_RELAY)
        self._witness = scripts.register(WITNESS)
        self._add_watch = scripts.register(ADD_WATCH)
        self._remove_watch = scripts.register(REMOVE_WATCH)
        self._watchers = scripts.register(WATCHERS)
        self._reap_watches = scripts.register(REAP_WATCHES)
        self._forget_node = scripts.register(FORGET_NODE)
        self._drop_if_idle = scripts.register(DROP_IF_IDLE)
        self._reshape = scripts.register(RESHAPE)

    def _key(self, kind: str, digest: str) -> str:
        return f"{self._p}{kind}:{digest}"

    async def shape(self, digest: str) -> tuple[int, int] | None:
        return shape_of(await self._client.hmget(self._key("b", digest), ["size", "chunks"]))

    async def ensure(self, digest: str, size: int, chunk_count: int) -> tuple[int, int]:
        known = shape_of(await self._ensure(digest, size, chunk_count))
        assert known is not None
        return known

    async def shapes(self) -> dict[str, tuple[int, int]]:
        digests = sorted(text(d) for d in await self._client.smembers(self._p + "blobs"))
        async with self._client.pipeline(transaction=False) as pipe:
            for digest in digests:
                pipe.hmget(self._key("b", digest), ["size", "chunks"])
            replies = await pipe.execute()
        found = {d: shape_of(raw) for d, raw in zip(digests, replies, strict=True)}
        return {d: shape for d, shape in found.items() if shape is not None}

    async def count(self) -> int:
        return int(await self._client.scard(self._p + "blobs"))

    async def metainfo(self, digest: str, chunk: int) -> bytes | None:
        raw = await self._client.hget(self._key("mi", digest), str(chunk))
        return bytes(raw) if raw is not None else None

    async def publish(self, digest: str, chunk: int, metainfo: bytes) -> bytes | None:
        known = await self._publish(digest, chunk, metainfo)
        return bytes(known) if known else None

    async def published(self, digest: str) -> list[int]:
        return sorted(int(c) for c in await self._client.hkeys(self._key("mi", digest)))

    async def forget_metainfo(self, digest: str, chunks: Sequence[int]) -> None:
        if chunks:
            await self._client.hdel(self._key("mi", digest), *indices_text(chunks))

    async def request(
        self, digest: str, size: int, chunk_count: int, node_id: str, now: float, bound: int
    ) -> tuple[tuple[int, int], bool]:
        known_size, known_count, allowed = await self._request(
            digest, size, chunk_count, node_id, repr(now), bound
        )
        return (int(known_size), int(known_count)), bool(allowed)

    async def requesters(self, digest: str) -> list[str]:
        return [text(n) for n in await self._client.zrange(self._key("rq", digest), 0, -1)]

    async def asked(self, node_id: str) -> list[str]:
        return [text(d) for d in await self._client.smembers(self._key("nr", node_id))]

    async def stale_requesters(self, digest: str, before: float) -> list[str]:
        asked = await self._client.hgetall(self._key("rqt", digest))
        return sorted(text(n) for n, at in asked.items() if number(at) < before)

    async def forget_requester(self, digest: str, node_id: str) -> None:
        await self._forget_requester(digest, node_id)

    async def fanout(self, digest: str, chunk: int) -> dict[str, float]:
        members = await self._client.hgetall(f"{self._p}fo:{digest}:{chunk}")
        return {text(n): number(since) for n, since in members.items()}

    async def set_fanout(self, digest: str, chunk: int, members: dict[str, float]) -> None:
        pairs = [v for node, since in members.items() for v in (node, repr(since))]
        await self._set_fanout(digest, chunk, *pairs)

    async def join_fanout(self, digest: str, chunk: int, node_id: str, now: float, k: int) -> bool:
        return bool(await self._join_fanout(digest, chunk, node_id, repr(now), k))

    async def join_relay(
        self, digest: str, chunk: int, node_id: str, now: float, window: int, stale_after: float
    ) -> bool:
        stale_before = repr(now - stale_after)
        return bool(await self._join_relay(digest, chunk, node_id, repr(now), window, stale_before))

    async def leave_fanout(self, digest: str, chunk: int, node_ids: Collection[str]) -> None:
        if node_ids:
            await self._client.hdel(f"{self._p}fo:{digest}:{chunk}", *node_ids)

    async def witness(self, digest: str, chunk: int, fingerprint: str, node_id: str) -> bool:
        return bool(await self._witness(digest, chunk, fingerprint, node_id))

    async def ask_republish(self, digest: str, chunk: int, now: float, interval: float) -> bool:
        return bool(await self._ask_republish(digest, chunk, repr(now), interval))

    async def clear_republish(self, digest: str, chunk: int) -> None:
        await self._client.hdel(self._key("ra", digest), str(chunk))

    async def add_watch(self, digest: str, node_id: str, watch: str, ahead: bool = False) -> None:
        await self._add_watch(digest, node_id, watch, int(ahead))

    async def remove_watch(self, digest: str, node_id: str, watch: str) -> None:
        await self._remove_watch(digest, node_id, watch)

    async def watchers(self, digest: str) -> list[str]:
        return sorted(text(n) for n in await self._watchers(digest))

    async def watched(self) -> list[str]:
        return [text(d) for d in await self._client.zrange(self._p + "watched", 0, -1)]

    async def forget_node(self, node_id: str) -> set[str]:
        return {text(d) for d in await self._forget_node(node_id)}

    async def drop_if_idle(self, digest: str) -> bool:
        return bool(await self._drop_if_idle(digest))

    async def reshape(self, digest: str, size: int, chunk_count: int) -> tuple[int, int] | None:
        return shape_of(await self._reshape(digest, size, chunk_count))

    async def reap_watches(self) -> None:
        """Forget the watches of replicas that stopped beating: their streams are gone."""
        await self._reap_watches()
