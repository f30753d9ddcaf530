"""Seeded image references: which manifest digest a tag names, and which nodes announced it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resolution:
    digest: str
    holders: tuple[str, ...]  # node ids, in announcement order


class RefIndex:
    def __init__(self) -> None:
        self._refs: dict[str, dict[str, dict[str, None]]] = {}  # ref -> digest -> node ids
        self._by_node: dict[str, set[tuple[str, str]]] = {}

    def add(self, node_id: str, ref: str, digest: str) -> None:
        self._refs.setdefault(ref, {}).setdefault(digest, {})[node_id] = None
        self._by_node.setdefault(node_id, set()).add((ref, digest))

    def remove(self, node_id: str, ref: str, digest: str) -> None:
        digests = self._refs.get(ref, {})
        digests.get(digest, {}).pop(node_id, None)
        if digest in digests and not digests[digest]:
            del digests[digest]
        if ref in self._refs and not digests:
            del self._refs[ref]
        held = self._by_node.get(node_id)
        if held is not None:
            held.discard((ref, digest))
            if not held:
                del self._by_node[node_id]

    def count(self, node_id: str) -> int:
        return len(self._by_node.get(node_id, ()))

    def drop_node(self, node_id: str) -> None:
        for ref, digest in list(self._by_node.get(node_id, ())):
            self.remove(node_id, ref, digest)

    def resolve(self, ref: str) -> list[Resolution]:
        """Every digest announced for `ref`, the most widely held first."""
        found = [Resolution(d, tuple(nodes)) for d, nodes in self._refs.get(ref, {}).items()]
        return sorted(found, key=lambda r: -len(r.holders))
