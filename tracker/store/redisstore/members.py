"""Members in Redis: one hash per node, a sorted set of last heartbeats, the silent set.

Heartbeats are most of a tracker's calls (10,000 nodes at 20 s: 500 a second), and a round trip
to Redis costs the replica more CPU than the script costs Redis (the client's own work and a
socket write each way). So heartbeats are written in batches, one script call each: a heartbeat
joins the batch being gathered, which leaves GATHER_SECONDS after the first heartbeat that found
no batch in flight, or else once the batch in flight is answered. A node waits that much longer
for its answer, milliseconds of a deadline of seconds; nothing is answered before it is written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import Any

from tracker.errors import FailedPrecondition
from tracker.nodes import Load, Node
from tracker.store.redisstore.base import Scripts, number, text, translating

ADDRESS_SECONDS = 5.0
MAX_ADDRESSES = 100_000
ADDRESS_FIELDS = ("registry", "peer", "zone")
MAX_BATCH = 500  # heartbeats written by one script call
GATHER_SECONDS = 0.01

JOIN = r"""
local id = ARGV[2]
local key = k('node', id)
local old = redis.call('HGETALL', key)
if #old == 0 and redis.call('ZCARD', k('seen')) >= tonumber(ARGV[3]) then return {-1} end
local epoch = redis.call('INCR', k('epoch'))
redis.call('DEL', key)
redis.call('HSET', key, 'instance', ARGV[4], 'registry', ARGV[5], 'peer', ARGV[6],
  'zone', ARGV[7], 'joined_at', ARGV[8], 'last_seen', ARGV[8], 'epoch', epoch)
redis.call('ZADD', k('seen'), ARGV[8], id)
redis.call('SREM', k('silent'), id)
return {epoch, old}
"""

# Heartbeats, 7 arguments each (node, time, 5 load figures); per heartbeat -1 (unknown node),
# 1 (it was silent) or 0.
HEARTBEATS = r"""
local out = {}
for i = 2, #ARGV, 7 do
  local id = ARGV[i]
  local key = k('node', id)
  if redis.call('EXISTS', key) == 0 then
    out[#out + 1] = -1
  else
    redis.call('HSET', key, 'last_seen', ARGV[i + 1], 'uploads', ARGV[i + 2],
      'downloads', ARGV[i + 3], 'upload_bps', ARGV[i + 4], 'download_bps', ARGV[i + 5],
      'store_bytes', ARGV[i + 6])
    redis.call('ZADD', k('seen'), ARGV[i + 1], id)
    out[#out + 1] = redis.call('SREM', k('silent'), id)
  end
end
return out
"""

Beat = tuple[list[Any], "asyncio.Future[int]"]

# Forget members: those named, or (ARGV[2] = '') those last seen before ARGV[3].
REMOVE = r"""
local ids
if ARGV[2] ~= '' then ids = {ARGV[2]}
else ids = redis.call('ZRANGEBYSCORE', k('seen'), '-inf', '(' .. ARGV[3], 'LIMIT', 0, 1000) end
local out = {}
for _, id in ipairs(ids) do
  local key = k('node', id)
  local record = redis.call('HGETALL', key)
  if #record > 0 then
    out[#out + 1] = id
    out[#out + 1] = record
    redis.call('DEL', key)
  end
  redis.call('ZREM', k('seen'), id)
  redis.call('SREM', k('silent'), id)
end
return out
"""

SILENCE = r"""
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', k('seen'), '-inf', '(' .. ARGV[2])) do
  if redis.call('SADD', k('silent'), id) == 1 then out[#out + 1] = id end
end
return out
"""


def node_of(node_id: str, raw: list[Any] | dict[Any, Any]) -> Node:
    """A member from its hash (a flat list as Lua returns it, or a dict as HGETALL does)."""
    if isinstance(raw, list):
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    fields = {text(key): value for key, value in raw.items()}
    load = Load(
        int(number(fields.get("uploads"))),
        int(number(fields.get("downloads"))),
        int(number(fields.get("upload_bps"))),
        int(number(fields.get("download_bps"))),
        int(number(fields.get("store_bytes"))),
    )
    return Node(
        node_id,
        text(fields.get("instance")),
        text(fields.get("registry")),
        text(fields.get("peer")),
        text(fields.get("zone")),
        joined_at=number(fields.get("joined_at")),
        last_seen=number(fields.get("last_seen")),
        load=load,
        epoch=int(number(fields.get("epoch"))),
    )


@translating
class RedisMembers:
    def __init__(self, client: Any, scripts: Scripts, prefix: str) -> None:
        self._client = client
        self._p = prefix
        # Records handed out as peers' addresses, kept ADDRESS_SECONDS (bounded): they change
        # only when a node joins again, and a Gone notification drops them at once.
        self._addresses: dict[str, tuple[Node, float]] = {}
        self._join = scripts.register(JOIN)
        self._heartbeats = scripts.register(HEARTBEATS)
        self._beats: list[Beat] = []  # gathered for the next batch
        self._writer: asyncio.Task[None] | None = None
        self._remove = scripts.register(REMOVE)
        self._silence = scripts.register(SILENCE)

    async def join(self, node: Node, max_nodes: int) -> tuple[Node, Node | None]:
        reply = await self._join(
            node.id,
            max_nodes,
            node.instance,
            node.registry,
            node.peer,
            node.zone,
            repr(node.joined_at),
        )
        if reply[0] == -1:
            raise FailedPrecondition(f"the cluster is full ({max_nodes} nodes)")
        epoch, old = reply
        joined = Node(
            node.id,
            node.instance,
            node.registry,
            node.peer,
            node.zone,
            node.joined_at,
            node.last_seen,
            epoch=int(epoch),
        )
        return joined, node_of(node.id, old) if old else None

    async def get(self, node_id: str) -> Node | None:
        raw = await self._client.hgetall(self._p + "node:" + node_id)
        return node_of(node_id, raw) if raw else None

    async def many(self, node_ids: Collection[str]) -> dict[str, Node]:
        if not node_ids:
            return {}
        ids = list(node_ids)
        async with self._client.pipeline(transaction=False) as pipe:
            for node_id in ids:
                pipe.hgetall(self._p + "node:" + node_id)
            records = await pipe.execute()
        return {n: node_of(n, raw) for n, raw in zip(ids, records, strict=True) if raw}

    async def addresses(self, node_ids: Collection[str]) -> dict[str, Node]:
        now = time.monotonic()
        found: dict[str, Node] = {}
        missing = []
        for node_id in node_ids:
            cached = self._addresses.get(node_id)
            if cached is not None and cached[1] > now:
                found[node_id] = cached[0]
            else:
                missing.append(node_id)
        if missing:
            fresh = await self._addresses_of(missing)
            if len(self._addresses) + len(fresh) > MAX_ADDRESSES:
                self._addresses.clear()
            for node_id, node in fresh.items():
                self._addresses[node_id] = (node, now + ADDRESS_SECONDS)
            found |= fresh
        return found

    async def _addresses_of(self, node_ids: list[str]) -> dict[str, Node]:
        """Members' records with their addresses only (a full record is 4-5 times the bytes)."""
        async with self._client.pipeline(transaction=False) as pipe:
            for node_id in node_ids:
                pipe.hmget(self._p + "node:" + node_id, ADDRESS_FIELDS)
            records = await pipe.execute()
        return {
            n: Node(n, "", text(registry), text(peer), text(zone), 0.0, 0.0)
            for n, (registry, peer, zone) in zip(node_ids, records, strict=True)
            if registry is not None
        }

    def forget_address(self, node_id: str) -> None:
        self._addresses.pop(node_id, None)

    async def all(self) -> list[Node]:
        ids = [text(n) for n in await self._client.zrange(self._p + "seen", 0, -1)]
        found = await self.many(ids)
        return [found[n] for n in ids if n in found]

    async def count(self) -> int:
        return int(await self._client.zcard(self._p + "seen"))

    async def heartbeat(self, node_id: str, now: float, load: Load) -> bool | None:
        args = [
            node_id,
            repr(now),
            load.uploads,
            load.downloads,
            load.upload_bytes_per_second,
            load.download_bytes_per_second,
            load.store_bytes,
        ]
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._beats.append((args, answer))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_beats(), name="store-heartbeats")
        was_silent = await answer
        return None if was_silent == -1 else bool(was_silent)

    async def _write_beats(self) -> None:
        """Write the gathered heartbeats, batch after batch, until none is left; each caller
        gets its own answer, or its batch's error."""
        batch: list[Beat] = []
        try:
            await asyncio.sleep(GATHER_SECONDS)  # later batches gather while one is in flight
            while self._beats:
                batch, self._beats = self._beats[:MAX_BATCH], self._beats[MAX_BATCH:]
                try:
                    replies = await self._heartbeats(*(a for args, _ in batch for a in args))
                except Exception as e:
                    for _, answer in batch:
                        if not answer.done():
                            answer.set_exception(e)
                    continue
                for (_, answer), reply in zip(batch, replies, strict=True):
                    if not answer.done():  # its caller may have given up
                        answer.set_result(int(reply))
        finally:
            self._writer = None
            # Cancelled (the store closes): no caller is left waiting.
            for _, answer in [*batch, *self._beats]:
                answer.cancel()
            self._beats = []

    async def remove(self, node_id: str) -> Node | None:
        gone = await self._removed(await self._remove(node_id, 0))
        return gone[0] if gone else None

    async def expire(self, before: float) -> list[Node]:
        return await self._removed(await self._remove("", repr(before)))

    async def _removed(self, reply: list[Any]) -> list[Node]:
        return [node_of(text(reply[i]), reply[i + 1]) for i in range(0, len(reply), 2)]

    async def silence(self, before: float) -> list[str]:
        return [text(n) for n in await self._silence(repr(before))]

    async def silent(self) -> frozenset[str]:
        return frozenset(text(n) for n in await self._client.smembers(self._p + "silent"))
