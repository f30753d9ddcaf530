"""A node's announcement in Redis as one script (`tracker.store.Store.announce`): what took
nine round trips and twenty to thirty commands for one chunk (the node, the blob's shape, the
holding, its counts, the leases to end, the fan-out, whether the blob is now complete) is one
round trip, and the few commands the script itself runs. The rules are those of the memory
store's `announce`; the fan-out members are chosen as `tracker.handout.fanout_members` does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tracker.store import Announced, Claim, Gain
from tracker.store.redisstore.base import bitmap_of_mask, text
from tracker.store.redisstore.blobs import FORGET_REQUESTER
from tracker.store.redisstore.leases import RELEASE, ended
from tracker.store.redisstore.peers import HOLDINGS

ANNOUNCE = (
    HOLDINGS
    + RELEASE
    + FORGET_REQUESTER
    + r"""
-- The blob's requesters that are members and not silent, the node aside, in arrival order,
-- each with the bitmap of the chunks it holds whole.
local function waiting_on(d, node)
  local out = {}
  local requesters = redis.call('ZRANGE', k('rq', d), 0, -1)
  if #requesters == 0 then return out end
  local silent = {}
  for _, n in ipairs(redis.call('SMEMBERS', k('silent'))) do silent[n] = true end
  for _, r in ipairs(requesters) do
    if r ~= node and not silent[r] and redis.call('EXISTS', k('node', r)) == 1 then
      out[#out + 1] = {r, redis.call('GET', k('mc', d, r)) or ''}
    end
  end
  return out
end

-- `fanout` of those waiting that lack chunk c, rotating by chunk (`fanout_members`).
local function members_for(waiting, c, fanout)
  local lacking = {}
  for _, w in ipairs(waiting) do
    if not bit_of(w[2], c) then lacking[#lacking + 1] = w[1] end
  end
  local out = {}
  if #lacking == 0 then return out end
  local start = (c * fanout) % #lacking
  for i = 0, math.min(fanout, #lacking) - 1 do
    out[#out + 1] = lacking[(start + i) % #lacking + 1]
  end
  return out
end

local function set_fanout(d, c, members, now)
  redis.call('DEL', k('fo', d, c))
  if #members == 0 then
    redis.call('SREM', k('fos', d), c)
    return
  end
  local pairs_ = {}
  for _, m in ipairs(members) do
    pairs_[#pairs_ + 1] = m
    pairs_[#pairs_ + 1] = now
  end
  redis.call('HSET', k('fo', d, c), unpack(pairs_))
  redis.call('SADD', k('fos', d), c)
end

-- The node holds `chunks` of d whole anew: end their leases, give those with one whole holder
-- their fan-out members, take them from those with two. Returns the chunks, their counts, the
-- leases ended and the chunks that had one fan-out member, with that member.
local function gain(node, d, chunks, now, fanout)
  local fields = {}
  for i, c in ipairs(chunks) do fields[i] = tostring(c) end
  local counts = hmget(k('cc', d), fields)
  local released = {}
  if redis.call('EXISTS', k('l', d)) == 1 then
    local leases = hmget(k('l', d), fields)
    for i, c in ipairs(fields) do
      if leases[i] then
        local ended = release(d, c, '', leases[i])
        if ended then released[#released + 1] = ended end
      end
    end
  end
  local waiting = nil
  local relayed = {}
  for i, c in ipairs(fields) do
    counts[i] = num(counts[i])
    if counts[i] == 1 then
      waiting = waiting or waiting_on(d, node)
      set_fanout(d, c, members_for(waiting, chunks[i], fanout), now)
    elseif counts[i] == 2 then
      local members = redis.call('HKEYS', k('fo', d, c))
      if #members == 1 then relayed[#relayed + 1] = {c, members[1]} end
      set_fanout(d, c, {}, now)
    end
  end
  return {d, fields, counts, released, relayed}
end

local node, now, fanout, bound = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local first = 6  -- then five values per claim: digest, size, chunks, complete, partial
if redis.call('EXISTS', k('node', node)) == 0 then return {0} end
if bound > 0 and redis.call('SCARD', k('nh', node)) + (#ARGV - first + 1) / 5 > bound then
  return {1}
end
local zone = redis.call('HGET', k('zone'), node) or ''
local gains, conflicts = {}, {}
for i = first, #ARGV, 5 do
  local d, size, nchunks = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local known = redis.call('HMGET', k('b', d), 'size', 'chunks')
  if known[1] and (known[1] ~= size or known[2] ~= nchunks) then
    conflicts[#conflicts + 1] = {d, known[1], known[2]}
  else
    if not known[1] then
      redis.call('HSET', k('b', d), 'size', size, 'chunks', nchunks)
      redis.call('SADD', k('blobs'), d)
    end
    local newly, complete = hold(node, d, zone, ARGV[i + 3], ARGV[i + 4], tonumber(nchunks))
    if newly ~= '' then gains[#gains + 1] = gain(node, d, bits(newly), now, fanout) end
    if complete == every(tonumber(nchunks)) then forget(d, node) end
  end
end
return {2, gains, conflicts}
"""
)


def arguments(
    node_id: str, claims: Sequence[Claim], now: float, fanout: int, max_blobs: int
) -> list[Any]:
    args: list[Any] = [node_id, repr(now), fanout, max_blobs]
    for claim in claims:
        complete = bitmap_of_mask(claim.complete)
        partial = bitmap_of_mask(claim.partial & ~claim.complete)
        args += [claim.digest, claim.size, claim.chunk_count, complete, partial]
    return args


def announced(reply: list[Any]) -> Announced:
    if reply[0] == 0:
        return Announced(member=False)
    if reply[0] == 1:
        return Announced(fit=False)
    _, gains, conflicts = reply
    return Announced(
        gains=tuple(_gain(g) for g in gains),
        conflicts={text(d): (int(size), int(count)) for d, size, count in conflicts},
    )


def _gain(reply: list[Any]) -> Gain:
    digest, chunks, counts, released, relayed = reply
    return Gain(
        text(digest),
        tuple(int(c) for c in chunks),
        tuple(int(n) for n in counts),
        tuple(ended(released)),
        tuple((int(c), text(relay)) for c, relay in relayed),
    )
