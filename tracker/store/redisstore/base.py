"""What the Redis store's parts share: the key layout, the Lua prelude, and conversions.

Keys (all under one prefix, `di:` by default; one Redis database per cluster):

    node:<id>            hash   a member: instance, registry, peer, zone, joined_at, last_seen,
                                epoch, load figures
    seen                 zset   member -> last heartbeat          silent   set of members
    zone                 hash   member -> zone                    zones    hash zone -> members
    nh:<node>            set    blobs the node holds chunks of    bh:<d>   set: nodes holding <d>
    mc:<d>:<node>        bitmap chunks of <d> held whole           mp:<d>:<node> ... partially
    hf:<d>               set    "<node>\t<zone>" holding every chunk of <d> whole
    hc:<d>:<c>           set    "<node>\t<zone>" holding chunk <c> whole, but not all of <d>
    hp:<d>:<c>           set    "<node>\t<zone>" holding chunk <c> partially
    cc:<d>               hash   chunk -> whole holders (hf's included)
    pn:<d>               hash   chunk -> partial holders
    l:<d>                hash   chunk -> lease (holder, granted, expires, progress, renewals,
                                fetched, heard; tab-separated)
    lh:<node>            set    "<d>|<c>" leases the node holds
    ldl                  zset   "<d>|<c>" -> lease expiry         fetching hash <d> -> count;
    fetching:total       the leases whose range is still coming in
    blobs                set    known blobs                       b:<d> hash size, chunks
    mi:<d>               hash   chunk -> metainfo                 ra:<d> hash chunk -> asked at
    wit:<d>              hash   chunk -> unconfirmed metainfo's fingerprint and publisher
    rq:<d>               zset   requester -> first asked          rqt:<d> hash requester -> last
    nr:<node>            set    blobs the node asked about
    fo:<d>:<c>           hash   fan-out member -> since           fos:<d> set chunks with fan-out
    w:<d>                hash   watch id -> node                  nw:<node> hash watch id -> blob
    watched              zset   blob -> order first watched       watchseq counter
    rd:<ref>             set    digests announced for a ref       rh:<ref>\n<d> zset node -> order
    nref:<node>          set    "<ref>\n<d>" the node announced
    job:<id>, jobt:<id>  hash   a preheat job and its targets     jobs zset id -> created
    q:<node>             list   work orders for the node          seq counter for ids
    replicas             zset   replica -> heard until            replica:<id> hash
    sweeper              the replica that sweeps (PX expiry)      cluster  the state's name
    events               stream notifications for every replica's hub

Scripts build keys from the prefix they are given (ARGV[1]): the store runs on a single Redis or
Valkey instance (or a primary with replicas), not on Redis Cluster, whose slots a script may not
cross.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from redis import exceptions as redis_errors

from tracker.errors import StoreUnavailable

T = TypeVar("T")
PREFIX = "di:"
UNREACHABLE = (
    redis_errors.ConnectionError,  # refused, reset, loading
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # a replica that is not (yet) the primary
    OSError,
)

# Redis numbers a bitmap's bits from the most significant bit of its first byte; a mask numbers
# chunk i as bit i of an int. Reversing each byte's bits and reading little-endian converts.
_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))

PRELUDE = r"""
local P = ARGV[1]
local function k(...) return P .. table.concat({...}, ':') end
local function num(v) if v then return tonumber(v) end return 0 end

-- Bit c of a bitmap (Redis's order: the most significant bit of the first byte is bit 0).
local function bit_of(s, c)
  local byte = string.byte(s, math.floor(c / 8) + 1)
  return byte ~= nil and bit.band(byte, bit.rshift(128, c % 8)) ~= 0
end

-- HMGET of any number of fields (Lua's unpack takes a few thousand values at most).
local function hmget(key, fields)
  local out = {}
  for i = 1, #fields, 1000 do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + 999, #fields)))
    for _, v in ipairs(part) do out[#out + 1] = v end
  end
  return out
end

-- The bitmaps of d's chunks held whole by the nodes in `excluded` that hold any.
local function excluded_maps(d, excluded)
  local maps = {}
  for _, node in ipairs(excluded) do
    local m = redis.call('GET', k('mc', d, node))
    if m then maps[#maps + 1] = m end
  end
  return maps
end

-- For each of `chunks` of d: its complete holders, those in `excluded` (node ids) aside. Two
-- reads however many chunks, and one per excluded node that holds part of d.
local function source_counts(d, chunks, excluded)
  local counts = hmget(k('cc', d), chunks)
  local maps = {}
  if #excluded > 0 then maps = excluded_maps(d, excluded) end
  local out = {}
  for i, c in ipairs(chunks) do
    local n = num(counts[i])
    for _, m in ipairs(maps) do
      if n > 0 and bit_of(m, tonumber(c)) then n = n - 1 end
    end
    out[i] = n
  end
  return out
end

-- The cold chunks of d (indices from 0, of `count`): no lease and no complete holder outside
-- `excluded`.
local function cold_chunks(d, count, excluded)
  local chunks = {}
  for c = 0, count - 1 do chunks[#chunks + 1] = tostring(c) end
  local sources = source_counts(d, chunks, excluded)
  local leases = hmget(k('l', d), chunks)
  local cold = {}
  for i = 1, count do
    if not leases[i] and sources[i] == 0 then cold[#cold + 1] = i - 1 end
  end
  return cold
end

local function split(s, sep)
  local out = {}
  for part in string.gmatch(s, '[^' .. sep .. ']+') do out[#out + 1] = part end
  return out
end

-- A lease as stored: holder, granted, expires, progress, renewals, fetched, heard.
local function lease_of(s)
  if not s then return nil end
  local f = split(s, '\t')
  return {holder = f[1], granted = tonumber(f[2]), expires = tonumber(f[3]),
          progress = tonumber(f[4]), renewals = tonumber(f[5]), fetched = f[6] == '1',
          heard = f[7] == '1'}
end

local function lease_text(l)
  return table.concat({l.holder, string.format('%.6f', l.granted),
    string.format('%.6f', l.expires), string.format('%.0f', l.progress), tostring(l.renewals),
    l.fetched and '1' or '0', l.heard and '1' or '0'}, '\t')
end

-- Leases of `holder` on blob d.
local function leases_on(holder, d)
  local n = 0
  local pre = d .. '|'
  for _, key in ipairs(redis.call('SMEMBERS', k('lh', holder))) do
    if string.sub(key, 1, #pre) == pre then n = n + 1 end
  end
  return n
end

-- Chunk indices set in a bitmap.
local function bits(s)
  local out = {}
  if not s then return out end
  for i = 1, #s do
    local byte = string.byte(s, i)
    if byte ~= 0 then
      for b = 0, 7 do
        if bit.band(byte, bit.rshift(128, b)) ~= 0 then out[#out + 1] = (i - 1) * 8 + b end
      end
    end
  end
  return out
end
"""


def mask_of_bitmap(raw: bytes | None) -> int:
    return int.from_bytes(raw.translate(_REVERSED), "little") if raw else 0


def bitmap_of_mask(mask: int) -> bytes:
    """The bitmap Redis would hold for a mask, without trailing zero bytes."""
    return mask.to_bytes((mask.bit_length() + 7) // 8, "little").translate(_REVERSED)


def text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    return raw.decode() if isinstance(raw, bytes) else raw


def number(raw: bytes | str | int | float | None) -> float:
    if raw is None or raw == b"" or raw == "":
        return 0.0
    return float(raw)


Script = Callable[..., Awaitable[Any]]


class Scripts:
    """Lua scripts, each with the prelude in front, run by SHA (loaded again on NOSCRIPT, as
    after Redis restarted)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    def register(self, body: str) -> Script:
        script = self._client.register_script(PRELUDE + body)
        prefix = self._prefix

        async def run(*args: Any) -> Any:
            return await script(keys=[], args=[prefix, *args])

        return run


def indices_text(indices: Iterable[int]) -> list[str]:
    return [str(i) for i in indices]


def translated(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return await method(*args, **kwargs)
        except UNREACHABLE as e:
            raise StoreUnavailable(f"the tracker's store is unreachable: {e}") from None

    return wrapper


def translating(cls: type[T]) -> type[T]:
    """Make every public coroutine method of `cls` raise `StoreUnavailable` when Redis cannot be
    reached (a class decorator: the class keeps its type)."""
    for name, member in list(vars(cls).items()):
        if inspect.iscoroutinefunction(member) and not name.startswith("_"):
            setattr(cls, name, translated(member))
    return cls
