"""The peer store in Redis: a bitmap pair per node and blob; the nodes holding a whole blob in one
set, the other holders of each chunk in a set by completeness, each member naming its zone, so
that a handout samples a few (SRANDMEMBER) without reading every holder of a popular chunk, and a
node announcing a whole blob writes a few keys, not one per chunk. The rules are those of
`tracker.peerstore`."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from typing import Any

from tracker.handout import Candidate, rank
from tracker.peerstore import Masks, mask_of
from tracker.store.redisstore.base import (
    Scripts,
    bitmap_of_mask,
    mask_of_bitmap,
    text,
    translating,
)

# Shared by HOLD, DROP, ADD_NODE, REMOVE_NODE and ANNOUNCE. A holder is "<node>\t<zone>" in the
# pools: hf:<d> when it holds every chunk of d whole (one write for a node's whole blob, however
# many chunks), else hc:<d>:<c> for each chunk it holds whole; hp:<d>:<c> for each it holds in
# part.
# cc:<d> and pn:<d> count the whole and the partial holders of each chunk, for every pool.
HOLDINGS = r"""
local function member(node, zone) return node .. '\t' .. zone end

-- Byte by byte f(a, b) of two bitmaps (the shorter padded with zeros), trailing zeros dropped.
local function bitop(a, b, f)
  local n = math.max(#a, #b)
  local bytes = {}
  for i = 1, n do bytes[i] = f(string.byte(a, i) or 0, string.byte(b, i) or 0) end
  while n > 0 and bytes[n] == 0 do n = n - 1 end
  local out = {}
  for i = 1, n do out[i] = string.char(bytes[i]) end
  return table.concat(out)
end
local function bor(a, b) return bitop(a, b, bit.bor) end
local function band(a, b) return bitop(a, b, bit.band) end
local function andnot(a, b)
  return bitop(a, b, function(x, y) return bit.band(x, bit.bnot(y)) end)
end

-- The bitmap of chunks 0 .. n-1.
local function every(n)
  local s = string.rep('\255', math.floor(n / 8))
  if n % 8 > 0 then s = s .. string.char(256 - 2 ^ (8 - n % 8)) end
  return s
end

-- Add delta to the counts of these chunks in hash `key`, deleting counts that reach 0.
local function count(key, chunks, delta)
  if #chunks == 0 then return end
  if #chunks == 1 then
    if redis.call('HINCRBY', key, chunks[1], delta) <= 0 then redis.call('HDEL', key, chunks[1]) end
    return
  end
  local counts = hmget(key, chunks)
  local set, gone = {}, {}
  for i, c in ipairs(chunks) do
    local n = num(counts[i]) + delta
    if n > 0 then
      set[#set + 1] = c
      set[#set + 1] = n
    else
      gone[#gone + 1] = c
    end
  end
  for i = 1, #set, 1000 do redis.call('HSET', key, unpack(set, i, math.min(i + 999, #set))) end
  for i = 1, #gone, 1000 do
    redis.call('HDEL', key, unpack(gone, i, math.min(i + 999, #gone)))
  end
end

local function set_or_delete(key, value, old)
  if value == old then return end
  if value == '' then redis.call('DEL', key) else redis.call('SET', key, value) end
end

-- Add holdings (bitmaps); returns the bitmaps of the chunks newly complete at the node and of
-- all it holds complete. `nchunks`, d's chunk count, is read when not given.
local function hold(node, d, zone, complete, partial, nchunks)
  local mc, mp = k('mc', d, node), k('mp', d, node)
  local old = redis.call('MGET', mc, mp)
  local old_c, old_p = old[1] or '', old[2] or ''
  local newly_c = andnot(complete, old_c)
  local new_c = bor(old_c, newly_c)
  local newly_p = andnot(andnot(partial, new_c), old_p)
  local moved = bits(band(old_p, newly_c))
  local new_p = andnot(bor(old_p, newly_p), new_c)
  local m = member(node, zone)
  if newly_c ~= '' then
    local chunks = nchunks or tonumber(redis.call('HGET', k('b', d), 'chunks') or '0')
    if chunks > 0 and new_c == every(chunks) then
      redis.call('SADD', k('hf', d), m)
      for _, c in ipairs(bits(old_c)) do redis.call('SREM', k('hc', d, c), m) end
    else
      for _, c in ipairs(bits(newly_c)) do redis.call('SADD', k('hc', d, c), m) end
    end
    count(k('cc', d), bits(newly_c), 1)
  end
  for _, c in ipairs(moved) do redis.call('SREM', k('hp', d, c), m) end
  count(k('pn', d), moved, -1)
  local added = bits(newly_p)
  for _, c in ipairs(added) do redis.call('SADD', k('hp', d, c), m) end
  count(k('pn', d), added, 1)
  set_or_delete(mc, new_c, old_c)
  set_or_delete(mp, new_p, old_p)
  if old_c == '' and old_p == '' and (new_c ~= '' or new_p ~= '') then
    redis.call('SADD', k('bh', d), node)
    redis.call('SADD', k('nh', node), d)
  end
  return newly_c, new_c
end

-- Forget the node's holdings of d; returns the chunks it held whole.
local function drop(node, d, zone)
  local mc, mp = k('mc', d, node), k('mp', d, node)
  local old = redis.call('MGET', mc, mp)
  local m = member(node, zone)
  local complete = bits(old[1] or '')
  if #complete > 0 then
    if redis.call('SREM', k('hf', d), m) == 0 then
      for _, c in ipairs(complete) do redis.call('SREM', k('hc', d, c), m) end
    end
    count(k('cc', d), complete, -1)
  end
  local partial = bits(old[2] or '')
  for _, c in ipairs(partial) do redis.call('SREM', k('hp', d, c), m) end
  count(k('pn', d), partial, -1)
  redis.call('DEL', mc, mp)
  redis.call('SREM', k('bh', d), node)
  redis.call('SREM', k('nh', node), d)
  return complete
end

-- Forget every holding of the node and its zone; returns digest, chunks held whole, ...
local function remove_node(node)
  local zone = redis.call('HGET', k('zone'), node)
  local out = {}
  for _, d in ipairs(redis.call('SMEMBERS', k('nh', node))) do
    local complete = drop(node, d, zone or '')
    if #complete > 0 then
      out[#out + 1] = d
      out[#out + 1] = complete
    end
  end
  redis.call('DEL', k('nh', node))
  if zone then
    redis.call('HDEL', k('zone'), node)
    count(k('zones'), {zone}, -1)
  end
  return out
end
"""

# A node added again starts afresh, as in `tracker.peerstore`: its pools name its zone.
ADD_NODE = (
    HOLDINGS
    + r"""
local node, zone = ARGV[2], ARGV[3]
remove_node(node)
redis.call('HSET', k('zone'), node, zone)
redis.call('HINCRBY', k('zones'), zone, 1)
"""
)

HOLD = (
    HOLDINGS
    + r"""
local node, d = ARGV[2], ARGV[3]
local newly = hold(node, d, redis.call('HGET', k('zone'), node) or '', ARGV[4], ARGV[5])
return newly
"""
)

DROP = (
    HOLDINGS
    + r"""
local node, d = ARGV[2], ARGV[3]
return drop(node, d, redis.call('HGET', k('zone'), node) or '')
"""
)

REMOVE_NODE = (
    HOLDINGS
    + r"""
return remove_node(ARGV[2])
"""
)

# Samples of a chunk's holders for a handout. `pick` adds to `out` up to `want` members of a pool
# of `n` (as lines: node, zone and `whole`, tab-separated), those in `zone` first, shuffled: a
# pool larger than `want` is sampled `spread` times over (SRANDMEMBER), so that the zone's share
# of a pool spread over `spread` zones still fills the handout. Returns how many it added.
SAMPLE = r"""
local function pick(out, key, n, want, zone, spread, whole)
  if n <= 0 or want <= 0 then return 0 end
  local members = redis.call('SRANDMEMBER', key, math.min(n, want * spread))
  local near, far = {}, {}
  local suffix = '\t' .. zone
  for _, m in ipairs(members) do
    if string.sub(m, -#suffix) == suffix then near[#near + 1] = m else far[#far + 1] = m end
  end
  local added = 0
  for _, group in ipairs({near, far}) do
    -- A small pool comes back whole, in the set's own order: shuffle what is kept.
    for i = 1, math.min(#group, want - added) do
      local j = math.random(i, #group)
      group[i], group[j] = group[j], group[i]
      out[#out + 1] = group[i] .. '\t' .. whole
      added = added + 1
    end
  end
  return added
end

-- Chunk c's holders: those holding the whole blob are sampled by the caller (`full`, how many
-- of them it found), the chunk's own complete holders here (`whole`: their count), then its
-- partial holders (`part`) while fewer than `want` were found.
local function sample(d, c, zone, want, spread, full, whole, part)
  local out = {}
  local found = full + pick(out, k('hc', d, c), whole, want, zone, spread, '1')
  if found < want then pick(out, k('hp', d, c), part, want - found, zone, spread, '0') end
  return table.concat(out, '\n')
end

-- How many times over to sample a large pool: once per zone, up to 4.
local function spread_of()
  return math.max(1, math.min(4, redis.call('HLEN', k('zones'))))
end
"""

HANDOUT = (
    SAMPLE
    + r"""
local d, c, zone, want = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local spread = spread_of()
local nfull = redis.call('SCARD', k('hf', d))
local full = {}
local found = pick(full, k('hf', d), nfull, want, zone, spread, '1')
local whole = num(redis.call('HGET', k('cc', d), c)) - nfull
local part = num(redis.call('HGET', k('pn', d), c))
return {table.concat(full, '\n'), sample(d, c, zone, want, spread, found, whole, part)}
"""
)


def candidates(sampled: bytes, exclude: Collection[str] = ()) -> list[Candidate]:
    found = []
    for line in sampled.decode().split("\n") if sampled else ():
        node_id, zone, whole = line.split("\t")
        if node_id not in exclude:
            found.append(Candidate(node_id, zone, whole == "1"))
    return found


def ranked(
    sampled: bytes,
    full: list[Candidate],
    requester: str,
    zone: str,
    bound: int,
    exclude: Collection[str],
    rng: random.Random,
) -> list[Candidate]:
    """The handout from a chunk's sample and the sample of the blob's whole holders (`full`,
    the excluded ones already left out)."""
    return rank(requester, zone, [*full, *candidates(sampled, exclude)], bound, rng)


def sample_size(bound: int, exclude: Collection[str]) -> int:
    """How many holders to sample so that `bound` remain without the requester and `exclude`."""
    return bound + 1 + len(exclude)


@translating
class RedisPeers:
    def __init__(self, client: Any, scripts: Scripts, prefix: str, rng: random.Random) -> None:
        self._client = client
        self._p = prefix
        self._rng = rng
        self._add_node = scripts.register(ADD_NODE)
        self._hold = scripts.register(HOLD)
        self._drop = scripts.register(DROP)
        self._remove_node = scripts.register(REMOVE_NODE)
        self._handout = scripts.register(HANDOUT)

    async def add_node(self, node_id: str, zone: str) -> None:
        await self._add_node(node_id, zone)

    async def remove_node(self, node_id: str) -> dict[str, int]:
        reply = await self._remove_node(node_id)
        return {text(reply[i]): mask_of(reply[i + 1]) for i in range(0, len(reply), 2)}

    async def hold(self, node_id: str, digest: str, complete: int, partial: int) -> int:
        if not complete | partial:
            return 0
        newly = await self._hold(
            node_id, digest, bitmap_of_mask(complete), bitmap_of_mask(partial & ~complete)
        )
        return mask_of_bitmap(newly)

    async def drop(self, node_id: str, digest: str) -> int:
        return mask_of(await self._drop(node_id, digest))

    async def holdings(self, node_id: str) -> dict[str, Masks]:
        digests = sorted(text(d) for d in await self._client.smembers(self._p + "nh:" + node_id))
        masks = await self._masks([(node_id, d) for d in digests])
        return {d: m for d, m in zip(digests, masks, strict=True) if m != (0, 0)}

    async def _masks(self, pairs: list[tuple[str, str]]) -> list[Masks]:
        if not pairs:
            return []
        keys = []
        for node_id, digest in pairs:
            keys += [f"{self._p}mc:{digest}:{node_id}", f"{self._p}mp:{digest}:{node_id}"]
        raw = await self._client.mget(keys)
        return [(mask_of_bitmap(raw[i]), mask_of_bitmap(raw[i + 1])) for i in range(0, len(raw), 2)]

    async def masks(self, node_id: str, digest: str) -> Masks:
        return (await self._masks([(node_id, digest)]))[0]

    async def masks_of(self, digest: str, node_ids: Collection[str]) -> dict[str, Masks]:
        ids = list(node_ids)
        return dict(zip(ids, await self._masks([(n, digest) for n in ids]), strict=True))

    async def blob_count(self, node_id: str) -> int:
        return int(await self._client.scard(self._p + "nh:" + node_id))

    async def holders(self, digest: str) -> dict[str, Masks]:
        nodes = sorted(text(n) for n in await self._client.smembers(self._p + "bh:" + digest))
        found = await self.masks_of(digest, nodes)
        return {n: m for n, m in found.items() if m != (0, 0)}

    async def has_blob(self, digest: str) -> bool:
        return bool(await self._client.exists(self._p + "bh:" + digest))

    async def complete_counts(self, digest: str, chunks: Sequence[int]) -> list[int]:
        if not chunks:
            return []
        counts = await self._client.hmget(self._p + "cc:" + digest, [str(c) for c in chunks])
        return [int(c) if c else 0 for c in counts]

    async def chunks_held(self, digest: str) -> int:
        return int(await self._client.hlen(self._p + "cc:" + digest))

    async def handout(
        self,
        digest: str,
        chunk: int,
        requester: str,
        zone: str,
        bound: int,
        exclude: Collection[str] = (),
    ) -> list[Candidate]:
        if bound <= 0:
            return []
        full, sampled = await self._handout(digest, chunk, zone, sample_size(bound, exclude))
        whole = candidates(full, exclude)
        return ranked(sampled, whole, requester, zone, bound, exclude, self._rng)
