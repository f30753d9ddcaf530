"""Seeded refs in Redis: per ref, the digests announced and, per digest, its holders in
announcement order (the rules of `tracker.refs.RefIndex`)."""

from __future__ import annotations

from typing import Any

from tracker.refs import Resolution
from tracker.store.redisstore.base import Scripts, text, translating

REMOVE = r"""
local function remove(node, ref, d)
  local holders = k('rh', ref .. '\n' .. d)
  redis.call('ZREM', holders, node)
  if redis.call('ZCARD', holders) == 0 then redis.call('SREM', k('rd', ref), d) end
  redis.call('SREM', k('nref', node), ref .. '\n' .. d)
end
"""

ADD = r"""
local node, ref, d = ARGV[2], ARGV[3], ARGV[4]
redis.call('ZADD', k('rh', ref .. '\n' .. d), 'NX', redis.call('INCR', k('refseq')), node)
redis.call('SADD', k('rd', ref), d)
redis.call('SADD', k('nref', node), ref .. '\n' .. d)
"""

REMOVE_ONE = (
    REMOVE
    + r"""
remove(ARGV[2], ARGV[3], ARGV[4])
"""
)

DROP_NODE = (
    REMOVE
    + r"""
local node = ARGV[2]
for _, entry in ipairs(redis.call('SMEMBERS', k('nref', node))) do
  local ref, d = string.match(entry, '^(.*)\n(.*)$')
  remove(node, ref, d)
end
redis.call('DEL', k('nref', node))
"""
)


@translating
class RedisRefs:
    def __init__(self, client: Any, scripts: Scripts, prefix: str) -> None:
        self._client = client
        self._p = prefix
        self._add = scripts.register(ADD)
        self._remove = scripts.register(REMOVE_ONE)
        self._drop_node = scripts.register(DROP_NODE)

    async def add(self, node_id: str, ref: str, digest: str) -> None:
        await self._add(node_id, ref, digest)

    async def remove(self, node_id: str, ref: str, digest: str) -> None:
        await self._remove(node_id, ref, digest)

    async def count(self, node_id: str) -> int:
        return int(await self._client.scard(self._p + "nref:" + node_id))

    async def drop_node(self, node_id: str) -> None:
        await self._drop_node(node_id)

    async def resolve(self, ref: str) -> list[Resolution]:
        """Every digest announced for `ref`, the most widely held first."""
        digests = sorted(text(d) for d in await self._client.smembers(self._p + "rd:" + ref))
        found = []
        for digest in digests:
            holders = await self._client.zrange(f"{self._p}rh:{ref}\n{digest}", 0, -1)
            found.append(Resolution(digest, tuple(text(n) for n in holders)))
        return sorted(found, key=lambda r: -len(r.holders))
