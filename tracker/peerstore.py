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
from collections.abc import Collection, Iterable, Sequence
from typing import Protocol

from tracker.handout import Candidate, Handouts, groups, rank

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

    def handouts(
        self,
        digest: str,
        chunks: Sequence[int],
        requester: str,
        zone: str,
        bound: int,
        exclude: Collection[str] = (),
    ) -> list[list[Candidate]]:
        """The handout of each of `chunks`, as `handout` gives it."""
        ...


PoolKey = tuple[str, int, str, bool]  # (digest, chunk, zone, complete)


class IndexedPeerStore:
    """Holders in pools keyed by (digest, chunk, zone, complete), each pool an insertion-ordered
    set of node ids (a dict of strings).

    The layout holds no Python object per chunk that the cyclic garbage collector must scan:
    keys are tuples of atoms and pools are dicts of strings, which CPython leaves untracked. With
    a per-chunk object (as first written) a tracker holding 100,000 chunks stalled for hundreds of
    milliseconds in every full collection, which showed as Locate latency spikes.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._zone_of: dict[str, str] = {}
        self._zones: dict[str, int] = {}  # zone -> how many nodes are in it
        self._masks: dict[str, dict[str, Masks]] = {}  # node -> digest -> (complete, partial)
        self._pools: dict[PoolKey, dict[str, None]] = {}
        self._counts: dict[tuple[str, int], int] = {}  # complete holders per chunk, when > 0
        self._held: dict[str, dict[int, None]] = {}  # digest -> chunks with a complete holder
        self._blob_nodes: dict[str, dict[str, None]] = {}  # digest -> nodes holding any chunk

    def add_node(self, node_id: str, zone: str) -> None:
        if node_id in self._zone_of:
            self.remove_node(node_id)
        self._zone_of[node_id] = zone
        self._zones[zone] = self._zones.get(zone, 0) + 1
        self._masks[node_id] = {}

    def remove_node(self, node_id: str) -> dict[str, int]:
        lost = {}
        for digest in list(self._masks.get(node_id, {})):
            mask = self.drop(node_id, digest)
            if mask:
                lost[digest] = mask
        zone = self._zone_of.pop(node_id, None)
        if zone is not None:
            self._zones[zone] -= 1
            if not self._zones[zone]:
                del self._zones[zone]
        self._masks.pop(node_id, None)
        return lost

    def hold(self, node_id: str, digest: str, complete: int, partial: int) -> int:
        zone = self._zone_of[node_id]
        if not complete | partial:
            return 0
        held = self._masks[node_id]
        old_complete, old_partial = held.get(digest, (0, 0))
        new_complete = complete & ~old_complete
        new_partial = partial & ~old_complete & ~old_partial & ~complete
        for index in indices_of(new_complete):
            if old_partial >> index & 1:
                self._leave_pool((digest, index, zone, False), node_id)
            self._pools.setdefault((digest, index, zone, True), {})[node_id] = None
            self._count(digest, index, +1)
        for index in indices_of(new_partial):
            self._pools.setdefault((digest, index, zone, False), {})[node_id] = None
        now_complete = old_complete | new_complete
        held[digest] = (now_complete, (old_partial | new_partial) & ~now_complete)
        self._blob_nodes.setdefault(digest, {})[node_id] = None
        return new_complete

    def drop(self, node_id: str, digest: str) -> int:
        complete, partial = self._masks.get(node_id, {}).pop(digest, (0, 0))
        if not complete | partial:
            return 0
        zone = self._zone_of[node_id]
        for index in indices_of(complete):
            self._leave_pool((digest, index, zone, True), node_id)
            self._count(digest, index, -1)
        for index in indices_of(partial):
            self._leave_pool((digest, index, zone, False), node_id)
        nodes = self._blob_nodes[digest]
        del nodes[node_id]
        if not nodes:
            del self._blob_nodes[digest]
        return complete

    def _leave_pool(self, key: PoolKey, node_id: str) -> None:
        pool = self._pools[key]
        del pool[node_id]
        if not pool:
            del self._pools[key]

    def _count(self, digest: str, index: int, delta: int) -> None:
        key = (digest, index)
        count = self._counts.get(key, 0) + delta
        if count:
            self._counts[key] = count
            self._held.setdefault(digest, {})[index] = None
        else:
            del self._counts[key]
            chunks = self._held[digest]
            del chunks[index]
            if not chunks:
                del self._held[digest]

    def holdings(self, node_id: str) -> dict[str, Masks]:
        return dict(self._masks.get(node_id, {}))

    def masks(self, node_id: str, digest: str) -> Masks:
        return self._masks.get(node_id, {}).get(digest, (0, 0))

    def blob_count(self, node_id: str) -> int:
        return len(self._masks.get(node_id, ()))

    def has_blob(self, digest: str) -> bool:
        return digest in self._blob_nodes

    def chunks_held(self, digest: str) -> int:
        return len(self._held.get(digest, ()))

    def holders(self, digest: str) -> dict[str, Masks]:
        return {n: self._masks[n][digest] for n in self._blob_nodes.get(digest, ())}

    def complete_count(self, digest: str, chunk: int) -> int:
        return self._counts.get((digest, chunk), 0)

    def handout(
        self,
        digest: str,
        chunk: int,
        requester: str,
        zone: str,
        bound: int,
        exclude: Collection[str] = (),
    ) -> list[Candidate]:
        if bound <= 0 or digest not in self._blob_nodes:
            return []
        skip = {requester, *exclude}
        chosen: list[Candidate] = []
        for complete in (True, False):
            local = self._pools.get((digest, chunk, zone, complete))
            remote = [
                pool
                for z in self._zones
                if z != zone and (pool := self._pools.get((digest, chunk, z, complete)))
            ]
            for group in ([local] if local else [], remote):
                need = bound - len(chosen)
                if need <= 0:
                    return chosen
                for node_id in self._sample(group, need, skip):
                    chosen.append(Candidate(node_id, self._zone_of[node_id], complete))
        return chosen

    def handouts(
        self,
        digest: str,
        chunks: Sequence[int],
        requester: str,
        zone: str,
        bound: int,
        exclude: Collection[str] = (),
    ) -> list[list[Candidate]]:
        """A chunk that every holder of the blob holds complete (a blob held whole, the usual
        case) has the same candidates as any other such chunk: they are ranked once for all."""
        nodes = self._blob_nodes.get(digest)
        if bound <= 0 or not nodes:
            return [[] for _ in chunks]
        shared: Handouts | None = None
        out = []
        for chunk in chunks:
            if self._counts.get((digest, chunk), 0) != len(nodes):
                out.append(self.handout(digest, chunk, requester, zone, bound, exclude))
                continue
            if shared is None:
                zone_of = self._zone_of
                whole = [Candidate(n, zone_of[n], True) for n in nodes if n not in exclude]
                shared = Handouts(groups(requester, zone, whole), bound, self._rng)
            out.append(shared.next())
        return out

    def _sample(self, group: list[dict[str, None]], need: int, skip: set[str]) -> list[str]:
        """Up to `need` members of the union of `group`, none in `skip`, in random order."""
        size = sum(len(members) for members in group)
        if size == 0:
            return []
        present = sum(1 for node_id in skip if any(node_id in m for m in group))
        population = [n for members in group for n in members] if len(group) > 1 else group[0]
        take = need + present
        if size <= 2 * take:
            # Small pools (the usual case): a sort on random keys shuffles 3x faster than sample.
            draw = self._rng.random
            picked = sorted(population, key=lambda _: draw())
        else:
            picked = self._rng.sample(list(population), take)
        return [n for n in picked if n not in skip][:need]


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

    def handouts(
        self,
        digest: str,
        chunks: Sequence[int],
        requester: str,
        zone: str,
        bound: int,
        exclude: Collection[str] = (),
    ) -> list[list[Candidate]]:
        return [self.handout(digest, c, requester, zone, bound, exclude) for c in chunks]
