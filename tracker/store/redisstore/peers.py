"""The peer store in Redis: a bitmap pair per node and blob, and the holders of each chunk in
sets by completeness and zone, so that a handout samples a few (SRANDMEMBER) without reading
every holder of a popular chunk. The rules are those of `tracker.peerstore`."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from typing import Any

from tracker.handout import Candidate, rank
from tracker.peerstore import Masks, indices_of, mask_of
from tracker.store.redisstore.base import Scripts, indices_text, mask_of_bitmap, text, translating

ADD_NODE = r"""
local node, zone = ARGV[2], ARGV[3]
local old = redis.call('HGET', k('zone'), node)
if old then
  if redis.call('HINCRBY', k('zones'), old, -1) <= 0 then redis.call('HDEL', k('zones'), old) end
end
redis.call('HSET', k('zone'), node, zone)
redis.call('HINCRBY', k('zones'), zone, 1)
"""

# Shared by HOLD, DROP and REMOVE_NODE.
HOLDINGS = r"""
local function pool(d, c, whole, zone)
  return k('pool', d, c, whole and 'c' or 'p', zone)
end

local function drop(node, d, zone)
  local mc, mp = k('mc', d, node), k('mp', d, node)
  local complete = bits(redis.call('GET', mc))
  for _, c in ipairs(complete) do
    redis.call('SREM', pool(d, c, true, zone), node)
    if redis.call('HINCRBY', k('cc', d), c, -1) <= 0 then redis.call('HDEL', k('cc', d), c) end
  end
  for _, c in ipairs(bits(redis.call('GET', mp))) do
    redis.call('SREM', pool(d, c, false, zone), node)
  end
  redis.call('DEL', mc, mp)
  redis.call('SREM', k('bh', d), node)
  redis.call('SREM', k('nh', node), d)
  return complete
end
"""

HOLD = (
    HOLDINGS
    + r"""
local node, d = ARGV[2], ARGV[3]
local zone = redis.call('HGET', k('zone'), node) or ''
local ncomplete = tonumber(ARGV[4])
local mc, mp = k('mc', d, node), k('mp', d, node)
local newly = {}
for i = 5, 4 + ncomplete do
  local c = tonumber(ARGV[i])
  if redis.call('SETBIT', mc, c, 1) == 0 then
    if redis.call('SETBIT', mp, c, 0) == 1 then
      redis.call('SREM', pool(d, c, false, zone), node)
    end
    redis.call('SADD', pool(d, c, true, zone), node)
    redis.call('HINCRBY', k('cc', d), c, 1)
    newly[#newly + 1] = c
  end
end
for i = 5 + ncomplete, #ARGV do
  local c = tonumber(ARGV[i])
  if redis.call('GETBIT', mc, c) == 0 and redis.call('SETBIT', mp, c, 1) == 0 then
    redis.call('SADD', pool(d, c, false, zone), node)
  end
end
if redis.call('STRLEN', mp) > 0 and redis.call('BITCOUNT', mp) == 0 then redis.call('DEL', mp) end
if redis.call('EXISTS', mc) == 1 or redis.call('EXISTS', mp) == 1 then
  redis.call('SADD', k('bh', d), node)
  redis.call('SADD', k('nh', node), d)
end
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
local node = ARGV[2]
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
  if redis.call('HINCRBY', k('zones'), zone, -1) <= 0 then redis.call('HDEL', k('zones'), zone) end
end
return out
"""
)

# A sample of chunk c's holders for a handout, best ranks first: whole holders in the zone, then
# in other zones, then partial ones; each pool asked for `want` at most (random members), and
# the next pools only while fewer than `want` are found. `zones`: every zone (HKEYS zones).
# Returns one string, a line per holder: node, zone and 1 (whole) or 0, tab-separated.
SAMPLE = r"""
local function sample(d, c, zone, want, zones)
  local out = {}
  local found = 0
  for _, whole in ipairs({'c', 'p'}) do
    local order = {zone}
    for _, z in ipairs(zones) do if z ~= zone then order[#order + 1] = z end end
    for _, z in ipairs(order) do
      if found >= want then return table.concat(out, '\n') end
      local members = redis.call('SRANDMEMBER', k('pool', d, c, whole, z), want)
      for _, node in ipairs(members) do
        out[#out + 1] = node .. '\t' .. z .. '\t' .. (whole == 'c' and '1' or '0')
        found = found + 1
      end
    end
  end
  return table.concat(out, '\n')
end
"""

HANDOUT = (
    SAMPLE
    + r"""
return sample(ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), redis.call('HKEYS', k('zones')))
"""
)


def candidates(sampled: bytes) -> list[Candidate]:
    found = []
    for line in sampled.decode().split("\n") if sampled else ():
        node_id, zone, whole = line.split("\t")
        found.append(Candidate(node_id, zone, whole == "1"))
    return found


def ranked(
    sampled: bytes,
    requester: str,
    zone: str,
    bound: int,
    exclude: Collection[str],
    rng: random.Random,
) -> list[Candidate]:
    found = [c for c in candidates(sampled) if c.node_id not in exclude]
    return rank(requester, zone, found, bound, rng)


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
        whole = indices_of(complete)
        args = [node_id, digest, len(whole), *indices_text(whole)]
        args += indices_text(indices_of(partial & ~complete))
        return mask_of(await self._hold(*args))

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
        sampled = await self._handout(digest, chunk, zone, sample_size(bound, exclude))
        return ranked(sampled, requester, zone, bound, exclude, self._rng)
