"""Who holds which chunk, complete or partial: the tracker's peer store.

`IndexedPeerStore` is the one the tracker runs: each chunk keeps its holders in pools by
completeness and zone, so a handout samples a few peers without scanning every holder of a
popular chunk. `ListPeerStore` is its plain twin (a scan per question, `handout.rank` for the
ranking); both pass one conformance suite, and the twin is the oracle the indexed store is checked
against.

Holdings are bit masks per node and blob: bit i of `complete` means chunk i is held complete. A
chunk held complete is never also partial at the same node.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable
from typing import Protocol

from tracker.handout import Candidate, rank

Masks = tuple[int, int]  # (complete, partial)


def mask_of(indices: Iterable[int]) -> int:
    mask = 0
    for index in indices:
        mask |= 1 << index
    return mask


def indices_of(mask: int) -> list[int]:
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


class PeerStore(Protocol):
    def add_node(self, node_id: str, zone: str) -> None: ...

    def remove_node(self, node_id: str) -> dict[str, int]:
        """Forget the node; returns the chunks it held complete, as masks by digest."""
        ...

    def hold(self, node_id: str, digest: str, complete: int, partial: int) -> int:
        """Add holdings (masks); returns the mask of chunks newly complete at this node."""
        ...

    def drop(self, node_id: str, digest: str) -> int:
        """Forget the node's holdings of one blob; returns the mask it held complete."""
        ...

    def holdings(self, node_id: str) -> dict[str, Masks]: ...

    def masks(self, node_id: str, digest: str) -> Masks: ...

    def blob_count(self, node_id: str) -> int: ...

    def holders(self, digest: str) -> dict[str, Masks]: ...

    def has_blob(self, digest: str) -> bool: ...

    def complete_count(self, digest: str, chunk: int) -> int: ...

    def chunks_held(self, digest: str) -> int:
        """How many chunks of the blob have at least one complete holder."""
        ...

    def handout(
        self,
        digest: str,
        chunk: int,
        requester: str,
        zone: str,
        bound: int,
        exclude: Collection[str] = (),
    ) -> list[Candidate]: ...


Pools = dict[str, dict[str, None]]  # zone -> node ids, an insertion-ordered set


class _Chunk:
    __slots__ = ("complete", "count", "partial")

    def __init__(self) -> None:
        self.complete: Pools = {}
        self.partial: Pools | None = None
        self.count = 0  # complete holders

    def empty(self) -> bool:
        return not self.complete and not self.partial


class IndexedPeerStore:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._zones: dict[str, str] = {}
        self._by_node: dict[str, dict[str, list[int]]] = {}  # node -> digest -> [complete, partial]
        self._chunks: dict[str, dict[int, _Chunk]] = {}

    def add_node(self, node_id: str, zone: str) -> None:
        if node_id in self._zones:
            self.remove_node(node_id)
        self._zones[node_id] = zone
        self._by_node[node_id] = {}

    def remove_node(self, node_id: str) -> dict[str, int]:
        lost = {}
        for digest in list(self._by_node.get(node_id, {})):
            mask = self.drop(node_id, digest)
            if mask:
                lost[digest] = mask
        self._zones.pop(node_id, None)
        self._by_node.pop(node_id, None)
        return lost

    def hold(self, node_id: str, digest: str, complete: int, partial: int) -> int:
        zone = self._zones[node_id]
        if not complete | partial:
            return 0
        masks = self._by_node[node_id].setdefault(digest, [0, 0])
        new_complete = complete & ~masks[0]
        new_partial = partial & ~masks[0] & ~masks[1] & ~complete
        chunks = self._chunks.setdefault(digest, {})
        for index in indices_of(new_complete):
            chunk = chunks.get(index) or chunks.setdefault(index, _Chunk())
            if masks[1] >> index & 1:
                _discard(chunk.partial, zone, node_id)
            chunk.complete.setdefault(zone, {})[node_id] = None
            chunk.count += 1
        for index in indices_of(new_partial):
            chunk = chunks.get(index) or chunks.setdefault(index, _Chunk())
            if chunk.partial is None:
                chunk.partial = {}
            chunk.partial.setdefault(zone, {})[node_id] = None
        masks[0] |= new_complete
        masks[1] = (masks[1] | new_partial) & ~masks[0]
        return new_complete

    def drop(self, node_id: str, digest: str) -> int:
        masks = self._by_node.get(node_id, {}).pop(digest, None)
        if masks is None:
            return 0
        zone = self._zones[node_id]
        chunks = self._chunks[digest]
        for index in indices_of(masks[0] | masks[1]):
            chunk = chunks[index]
            if masks[0] >> index & 1:
                _discard(chunk.complete, zone, node_id)
                chunk.count -= 1
            else:
                _discard(chunk.partial, zone, node_id)
            if chunk.empty():
                del chunks[index]
        if not chunks:
            del self._chunks[digest]
        return masks[0]

    def holdings(self, node_id: str) -> dict[str, Masks]:
        return {d: (m[0], m[1]) for d, m in self._by_node.get(node_id, {}).items()}

    def masks(self, node_id: str, digest: str) -> Masks:
        masks = self._by_node.get(node_id, {}).get(digest)
        return (masks[0], masks[1]) if masks else (0, 0)

    def blob_count(self, node_id: str) -> int:
        return len(self._by_node.get(node_id, ()))

    def has_blob(self, digest: str) -> bool:
        return digest in self._chunks

    def chunks_held(self, digest: str) -> int:
        return sum(1 for chunk in self._chunks.get(digest, {}).values() if chunk.count)

    def holders(self, digest: str) -> dict[str, Masks]:
        nodes: set[str] = set()
        for chunk in self._chunks.get(digest, {}).values():
            for pools in (chunk.complete, chunk.partial or {}):
                for members in pools.values():
                    nodes.update(members)
        return {n: (self._by_node[n][digest][0], self._by_node[n][digest][1]) for n in nodes}

    def complete_count(self, digest: str, chunk: int) -> int:
        entry = self._chunks.get(digest, {}).get(chunk)
        return entry.count if entry else 0

    def handout(
        self,
        digest: str,
        chunk: int,
        requester: str,
        zone: str,
        bound: int,
        exclude: Collection[str] = (),
    ) -> list[Candidate]:
        entry = self._chunks.get(digest, {}).get(chunk)
        if entry is None or bound <= 0:
            return []
        skip = {requester, *exclude}
        chosen: list[Candidate] = []
        for pools, complete in ((entry.complete, True), (entry.partial or {}, False)):
            local = [pools[zone]] if zone in pools else []
            remote = [members for z, members in pools.items() if z != zone]
            for group in (local, remote):
                need = bound - len(chosen)
                if need <= 0:
                    return chosen
                for node_id in self._sample(group, need, skip):
                    chosen.append(Candidate(node_id, self._zones[node_id], complete))
        return chosen

    def _sample(self, group: list[dict[str, None]], need: int, skip: set[str]) -> list[str]:
        """Up to `need` members of the union of `group`, none in `skip`, in random order."""
        size = sum(len(members) for members in group)
        if size == 0:
            return []
        present = sum(1 for node_id in skip if any(node_id in m for m in group))
        population = [n for members in group for n in members] if len(group) > 1 else group[0]
        picked = self._rng.sample(list(population), min(size, need + present))
        return [n for n in picked if n not in skip][:need]


def _discard(pools: Pools | None, zone: str, node_id: str) -> None:
    if pools is None:
        return
    members = pools.get(zone)
    if members is not None:
        members.pop(node_id, None)
        if not members:
            del pools[zone]


class ListPeerStore:
    """The plain twin: one mask pair per node and blob, a scan for every question."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._zones: dict[str, str] = {}
        self._masks: dict[str, dict[str, Masks]] = {}

    def add_node(self, node_id: str, zone: str) -> None:
        self._zones[node_id] = zone
        self._masks[node_id] = {}

    def remove_node(self, node_id: str) -> dict[str, int]:
        self._zones.pop(node_id, None)
        held = self._masks.pop(node_id, {})
        return {d: m[0] for d, m in held.items() if m[0]}

    def hold(self, node_id: str, digest: str, complete: int, partial: int) -> int:
        if not complete | partial:
            return 0
        old_complete, old_partial = self._masks[node_id].get(digest, (0, 0))
        new_complete = old_complete | complete
        self._masks[node_id][digest] = (new_complete, (old_partial | partial) & ~new_complete)
        return new_complete & ~old_complete

    def drop(self, node_id: str, digest: str) -> int:
        return self._masks.get(node_id, {}).pop(digest, (0, 0))[0]

    def holdings(self, node_id: str) -> dict[str, Masks]:
        return {d: m for d, m in self._masks.get(node_id, {}).items() if m != (0, 0)}

    def masks(self, node_id: str, digest: str) -> Masks:
        return self._masks.get(node_id, {}).get(digest, (0, 0))

    def blob_count(self, node_id: str) -> int:
        return len(self.holdings(node_id))

    def has_blob(self, digest: str) -> bool:
        return bool(self.holders(digest))

    def chunks_held(self, digest: str) -> int:
        union = 0
        for complete, _ in self.holders(digest).values():
            union |= complete
        return union.bit_count()

    def holders(self, digest: str) -> dict[str, Masks]:
        found = {n: held.get(digest, (0, 0)) for n, held in self._masks.items()}
        return {n: m for n, m in found.items() if m != (0, 0)}

    def complete_count(self, digest: str, chunk: int) -> int:
        return sum(1 for c, _ in self.holders(digest).values() if c >> chunk & 1)

    def handout(
        self,
        digest: str,
        chunk: int,
        requester: str,
        zone: str,
        bound: int,
        exclude: Collection[str] = (),
    ) -> list[Candidate]:
        candidates = [
            Candidate(node_id, self._zones[node_id], bool(complete >> chunk & 1))
            for node_id, (complete, partial) in self.holders(digest).items()
            if (complete | partial) >> chunk & 1 and node_id not in exclude
        ]
        return rank(requester, zone, candidates, bound, self._rng)
