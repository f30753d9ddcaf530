"""The tracker's state in Redis (or Valkey), shared by any number of tracker replicas.

Each part (`members`, `peers`, `leases`, ...) keeps its keys and scripts in its own module (the
layout is drawn in `base`). This module composes them, reads what a Locate shows of a blob's
chunks in one script (one round trip; a few commands per blob, and one per chunk held by nodes
that do not hold the whole blob), and carries notifications between replicas on a Redis stream:
every replica reads the stream from where it last was, so a replica misses none while connected;
when it lost its connection, it tells every watcher of this process that every chunk may have
changed (they look again) and, when Redis came back empty (the state started afresh), it ends
every stream, so that the nodes join again.

Redis errors that mean "unreachable" (refused, reset, timed out, loading, read-only replica)
become `StoreUnavailable`, which a node hears as UNAVAILABLE at once and answers by falling back
to the upstream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import Collection, Sequence
from typing import Any

import redis.asyncio as aioredis

from tracker.errors import StoreUnavailable
from tracker.handout import Handouts, groups
from tracker.hub import Changed, Event, Gone, Hub, Orders
from tracker.store import Announced, Candidacy, ChunkState, Claim, FanoutContext, FillContext
from tracker.store.redisstore import announce as announcescript
from tracker.store.redisstore import blobs as blobscripts
from tracker.store.redisstore import peers as peerscripts
from tracker.store.redisstore.base import (
    PREFIX,
    UNREACHABLE,
    Scripts,
    mask_of_bitmap,
    text,
    translating,
)
from tracker.store.redisstore.blobs import RedisBlobs
from tracker.store.redisstore.leases import RedisLeases, lease_of
from tracker.store.redisstore.members import RedisMembers
from tracker.store.redisstore.peers import RedisPeers
from tracker.store.redisstore.refs import RedisRefs
from tracker.store.redisstore.replicas import RedisReplicas
from tracker.store.redisstore.tasks import RedisTasks

log = logging.getLogger(__name__)

EVENTS_KEPT = 100_000  # notifications kept in the stream (a replica reads them within seconds)
READ_BLOCK_MS = 1000
CLOSE_SECONDS = 2.0
# One read of everything a Locate shows of a blob's chunks: per blob, the chunks' holder counts,
# leases and metainfo (HMGET) and a sample of the nodes holding the whole blob; per chunk, a
# sample of its other holders when it has any.
CHUNK_STATES = (
    peerscripts.SAMPLE
    + r"""
local d, zone, bound, with_meta = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5] == '1'
local excluded = redis.call('SMEMBERS', k('silent'))
-- Enough holders that `bound` remain without the requester and the silent members.
local want = 0
if bound > 0 then want = bound + 1 + #excluded end
local chunks = {}
for i = 6, #ARGV do chunks[#chunks + 1] = ARGV[i] end
-- Replies are the HMGETs' own arrays, and strings: Lua builds a table per value slowly.
local counts = hmget(k('cc', d), chunks)
local sources = counts
if #excluded > 0 then sources = source_counts(d, chunks, excluded) end
local leases = hmget(k('l', d), chunks)
local metas
if with_meta then metas = hmget(k('mi', d), chunks) else metas = redis.call('HKEYS', k('mi', d)) end
local full, samples = {}, {}
if want > 0 then
  local spread = spread_of()
  local nfull = redis.call('SCARD', k('hf', d))
  local found = pick(full, k('hf', d), nfull, want, zone, spread, '1')
  local partial = hmget(k('pn', d), chunks)
  for i, c in ipairs(chunks) do
    local whole, part = num(counts[i]) - nfull, num(partial[i])
    if whole > 0 or (part > 0 and found < want) then
      samples[#samples + 1] = i
      samples[#samples + 1] = sample(d, c, zone, want, spread, found, whole, part)
    end
  end
end
return {excluded, table.concat(full, '\n'), sources, leases, metas, samples}
"""
)

COLD_CHUNKS = r"""
local d, count = ARGV[2], tonumber(ARGV[3])
local excluded = {}
for i = 4, #ARGV do excluded[#excluded + 1] = ARGV[i] end
return cold_chunks(d, count, excluded)
"""

CANDIDACY = r"""
local function candidacy(node, d)
  return {node, leases_on(node, d), redis.call('SCARD', k('lh', node)),
          redis.call('GET', k('mc', d, node)) or false}
end
"""

CANDIDACIES = (
    CANDIDACY
    + r"""
local d = ARGV[2]
local out = {}
for i = 3, #ARGV do
  if redis.call('EXISTS', k('node', ARGV[i])) == 1 then out[#out + 1] = candidacy(ARGV[i], d) end
end
return out
"""
)

FANOUT_CONTEXT = r"""
local d, nchunks = ARGV[2], tonumber(ARGV[3])
local silent = {}
for _, n in ipairs(redis.call('SMEMBERS', k('silent'))) do silent[n] = true end
local members, involved, seen = {}, {}, {}
local function involve(n)
  if not seen[n] then
    seen[n] = true
    involved[#involved + 1] = n
  end
end
for i = 4 + nchunks, #ARGV do involve(ARGV[i]) end
for i = 4, 3 + nchunks do
  local entries = redis.call('HGETALL', k('fo', d, ARGV[i]))
  members[#members + 1] = entries
  for j = 1, #entries, 2 do involve(entries[j]) end
end
local requesters = redis.call('ZRANGE', k('rq', d), 0, -1)
for _, n in ipairs(requesters) do involve(n) end
local nodes = {}
for _, n in ipairs(involved) do
  local zone = redis.call('HGET', k('node', n), 'zone')
  if silent[n] then zone = false end
  nodes[#nodes + 1] = {n, zone, redis.call('GET', k('mc', d, n)) or false,
                       redis.call('GET', k('mp', d, n)) or false}
end
return {redis.call('HGET', k('b', d), 'chunks') or 0, members, requesters, nodes}
"""

FILL_CONTEXT = (
    blobscripts.WATCHES
    + CANDIDACY
    + r"""
local d, exclude = ARGV[2], ARGV[3]
local count = redis.call('HGET', k('b', d), 'chunks')
if not count then return false end
count = tonumber(count)
local silent = redis.call('SMEMBERS', k('silent'))
local cold = cold_chunks(d, count, silent)
local candidates, seen = {}, {}
local entries = redis.call('HGETALL', k('w', d))
for i = 1, #entries, 2 do
  local node = entries[i + 1]
  if node ~= exclude and not seen[node] and live(entries[i])
      and redis.call('EXISTS', k('node', node)) == 1 then
    seen[node] = true
    candidates[#candidates + 1] = candidacy(node, d)
  end
end
local fetching_blob = num(redis.call('HGET', k('fetching'), d))
return {count, fetching_blob, num(redis.call('GET', k('fetching:total'))), cold, candidates, silent}
"""
)


def _candidacies(reply: list[Any]) -> dict[str, Candidacy]:
    return {
        text(node): Candidacy(int(on_blob), int(total), mask_of_bitmap(held or None))
        for node, on_blob, total, held in reply
    }


def encode(events: Sequence[Event]) -> str:
    items: list[Any] = []
    for event in events:
        if isinstance(event, Changed):
            items.append({"c": [event.digest, list(event.chunks)]})
        elif isinstance(event, Gone):
            items.append({"g": [event.node_id, event.epoch]})
        else:
            items.append({"o": event.node_id})
    return json.dumps(items)


def decode(raw: bytes | str) -> list[Event]:
    events: list[Event] = []
    for item in json.loads(raw):
        if "c" in item:
            events.append(Changed(item["c"][0], tuple(item["c"][1])))
        elif "g" in item:
            events.append(Gone(item["g"][0], int(item["g"][1])))
        else:
            events.append(Orders(item["o"]))
    return events


@translating
class RedisStore:
    shared = True

    def __init__(
        self,
        client: aioredis.Redis,
        reader: aioredis.Redis,
        lease_ttl: float,
        rng: random.Random | None = None,
        prefix: str = PREFIX,
    ) -> None:
        """`client` for requests, `reader` (its own connection) for the blocking reads of the
        notification stream."""
        self.client = client
        self._reader = reader
        self._p = prefix
        scripts = Scripts(client, prefix)
        self._rng = rng or random.Random()
        self.members = RedisMembers(client, scripts, prefix)
        self.peers = RedisPeers(client, scripts, prefix, self._rng)
        self.leases = RedisLeases(client, scripts, prefix, lease_ttl)
        self.blobs = RedisBlobs(client, scripts, prefix)
        self.refs = RedisRefs(client, scripts, prefix)
        self.tasks = RedisTasks(client, scripts, prefix)
        self.replicas = RedisReplicas(client, scripts, prefix)
        self._chunk_states = scripts.register(CHUNK_STATES)
        self._cold_chunks = scripts.register(COLD_CHUNKS)
        self._candidacies = scripts.register(CANDIDACIES)
        self._fanout_context = scripts.register(FANOUT_CONTEXT)
        self._fill_context = scripts.register(FILL_CONTEXT)
        self._announce = scripts.register(announcescript.ANNOUNCE)
        self._listener: asyncio.Task[None] | None = None
        self._healthy = False
        self._state = ""  # the cluster id this replica knows
        self._closing = False

    async def start(self, hub: Hub) -> None:
        """Deliver every notification sent from now on; an unreachable Redis is waited for in
        the background (meanwhile every request is answered UNAVAILABLE)."""
        start = None
        try:
            start = await self._position()
            self._state = await self.cluster_id()
            self._healthy = True
        except UNREACHABLE as e:
            log.warning("the store is unreachable", extra={"error": str(e)})
        self._listener = asyncio.create_task(self._listen(hub, start), name="store-notifications")

    async def close(self) -> None:
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            # redis-py may swallow the cancellation of a read in progress: the loop also ends
            # on `_closing`, after that read (READ_BLOCK_MS at most).
            await asyncio.wait({self._listener}, timeout=CLOSE_SECONDS)
        await self.client.aclose()
        await self._reader.aclose()

    async def healthy(self) -> bool:
        return self._healthy

    async def cluster_id(self) -> str:
        key = self._p + "cluster"
        await self.client.set(key, uuid.uuid4().hex[:12], nx=True)
        return text(await self.client.get(key))

    # ---- notifications ----

    async def notify(self, events: Sequence[Event]) -> None:
        await self.client.xadd(
            self._p + "events", {"e": encode(events)}, maxlen=EVENTS_KEPT, approximate=True
        )

    async def _position(self) -> Any:
        """The id of the stream's last notification: reading goes on after it."""
        latest = await self._reader.xrevrange(self._p + "events", count=1)
        return latest[0][0] if latest else "0-0"

    async def _listen(self, hub: Hub, last: Any) -> None:
        """Deliver the stream's notifications to `hub`, from where the last read ended."""
        key = self._p + "events"
        while not self._closing:
            try:
                if last is None:
                    last = await self._position()
                    await self._reconnected(hub)
                reply: Any = await self._reader.xread({key: last}, count=500, block=READ_BLOCK_MS)
                if not reply:
                    await self._reconnected(hub, quiet=True)
                for _, entries in reply:
                    for entry_id, fields in entries:
                        last = entry_id
                        events = decode(fields[b"e"])
                        for event in events:
                            if isinstance(event, Gone):
                                self.members.forget_address(event.node_id)
                        hub.deliver(events)
            except asyncio.CancelledError:
                raise
            except (*UNREACHABLE, StoreUnavailable) as e:
                if self._closing:
                    return
                if self._healthy:
                    log.warning("the store is unreachable", extra={"error": str(e)})
                self._healthy = False
                last = None
                await asyncio.sleep(0.5)
            except Exception:
                log.exception("reading notifications failed")
                last = None
                await asyncio.sleep(0.5)

    async def _reconnected(self, hub: Hub, quiet: bool = False) -> None:
        """Check the state is the one this replica knew; if it started afresh (Redis came back
        empty), end every stream: the nodes join again. After a lost connection (not `quiet`),
        notifications may have been missed: every watcher looks again."""
        current = await self.cluster_id()
        if self._state and current != self._state:
            log.warning("the store's state started afresh: ending every stream")
            hub.close_all()
        elif not quiet:
            log.info("the store is reachable again")
            hub.resync()
        self._state = current
        self._healthy = True

    # ---- reads across the parts ----

    async def chunk_states(
        self,
        digest: str,
        chunks: Sequence[int],
        requester: str,
        zone: str,
        bound: int,
        with_metainfo: bool,
    ) -> list[ChunkState]:
        if not chunks:
            return []
        reply = await self._chunk_states(
            digest, zone, bound, int(with_metainfo), *(str(c) for c in chunks)
        )
        excluded_raw, full_raw, sources, leases, metas, samples = reply
        excluded = {text(n) for n in excluded_raw}
        full = peerscripts.candidates(full_raw, excluded)
        sampled = {int(samples[i]) - 1: samples[i + 1] for i in range(0, len(samples), 2)}
        if not with_metainfo:  # the chunks published, not their metainfo
            published = {int(c) for c in metas}
            metas = [b"" if c in published else None for c in chunks]
        whole_only = Handouts(groups(requester, zone, full), bound, self._rng)
        states = []
        for i, chunk in enumerate(chunks):
            peers = []
            if bound > 0:
                own = sampled.get(i)
                if own:
                    peers = peerscripts.ranked(
                        own, full, requester, zone, bound, excluded, self._rng
                    )
                else:
                    peers = whole_only.next()  # a chunk that only the whole holders hold
            lease, metainfo = leases[i], metas[i]
            states.append(
                ChunkState(
                    chunk,
                    int(sources[i] or 0),
                    peers,
                    lease_of(digest, chunk, lease) if lease else None,
                    metainfo is not None,
                    bytes(metainfo) if metainfo else None,
                )
            )
        return states

    async def cold_chunks(
        self, digest: str, chunk_count: int, exclude: Collection[str]
    ) -> list[int]:
        return [int(c) for c in await self._cold_chunks(digest, chunk_count, *exclude)]

    async def candidacies(self, digest: str, node_ids: Collection[str]) -> dict[str, Candidacy]:
        if not node_ids:
            return {}
        return _candidacies(await self._candidacies(digest, *node_ids))

    async def fanout_context(
        self, digest: str, chunks: Sequence[int], nodes: Collection[str] = ()
    ) -> FanoutContext:
        count, members, requesters, found = await self._fanout_context(
            digest, len(chunks), *(str(c) for c in chunks), *nodes
        )
        return FanoutContext(
            int(count),
            {
                chunk: {text(e[i]): float(e[i + 1]) for i in range(0, len(e), 2)}
                for chunk, e in zip(chunks, members, strict=True)
            },
            [text(n) for n in requesters],
            {text(n): text(zone) for n, zone, _, _ in found if zone is not None},
            {text(n): (mask_of_bitmap(c), mask_of_bitmap(p)) for n, _, c, p in found},
        )

    async def fill_context(self, digest: str, exclude: str) -> FillContext | None:
        reply = await self._fill_context(digest, exclude)
        if reply is None:
            return None
        count, fetching_blob, fetching, cold, candidacies, silent = reply
        return FillContext(
            int(count),
            int(fetching_blob),
            int(fetching),
            [int(c) for c in cold],
            _candidacies(candidacies),
            frozenset(text(n) for n in silent),
        )

    async def drop_if_idle(self, digest: str) -> bool:
        return await self.blobs.drop_if_idle(digest)

    async def announce(
        self, node_id: str, claims: Sequence[Claim], now: float, fanout: int, max_blobs: int = 0
    ) -> Announced:
        args = announcescript.arguments(node_id, claims, now, fanout, max_blobs)
        return announcescript.announced(await self._announce(*args))

    async def reshape(self, digest: str, size: int, chunk_count: int) -> tuple[int, int] | None:
        return await self.blobs.reshape(digest, size, chunk_count)
