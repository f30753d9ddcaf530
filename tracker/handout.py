"""The peer handout policy: which holders of a chunk a requester is told about, in what order.

Ranks, best first: complete holders in the requester's zone, complete elsewhere, partial holders
in the zone, partial elsewhere. A handout never names the requester, holds at most `bound` peers,
takes whole ranks before it looks at the next, and is shuffled within a rank so that requesters
spread over the holders instead of all picking the first one.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import NamedTuple

RANKS = 4


class Candidate(NamedTuple):
    """A peer as the ranking sees it (a tuple: a Locate makes hundreds of these)."""

    node_id: str
    zone: str
    complete: bool


def rank_of(candidate: Candidate, zone: str) -> int:
    return (0 if candidate.complete else 2) + (0 if candidate.zone == zone else 1)


def rank(
    requester: str,
    zone: str,
    candidates: Iterable[Candidate],
    bound: int,
    rng: random.Random,
) -> list[Candidate]:
    """The handout for `requester` (in `zone`) among `candidates`; a node listed twice counts
    with its better rank."""
    return pick(groups(requester, zone, candidates), bound, rng)


def groups(requester: str, zone: str, candidates: Iterable[Candidate]) -> list[list[Candidate]]:
    """The candidates by rank, best first, without the requester, each node once. A Locate
    whose chunks have the same candidates (a blob held whole) groups them once and picks from
    the groups for each chunk."""
    best: dict[str, Candidate] = {}
    for candidate in candidates:
        if candidate.node_id == requester:
            continue
        known = best.get(candidate.node_id)
        if known is None or rank_of(candidate, zone) < rank_of(known, zone):
            best[candidate.node_id] = candidate
    ranked: list[list[Candidate]] = [[] for _ in range(RANKS)]
    for candidate in best.values():
        ranked[rank_of(candidate, zone)].append(candidate)
    return ranked


def pick(ranked: Sequence[Sequence[Candidate]], bound: int, rng: random.Random) -> list[Candidate]:
    """A handout of at most `bound` from `groups`: whole ranks first, shuffled within a rank."""
    chosen: list[Candidate] = []
    for group in ranked:
        room = bound - len(chosen)
        if room <= 0:
            break
        chosen.extend(rng.sample(group, min(room, len(group))))
    return chosen


class Handouts:
    """Handouts for many chunks with the same candidates (a blob held whole), each with the
    properties of `pick` and far cheaper: each rank is shuffled once, and a chunk takes from it
    a window starting at a random place (the whole rank, rotated, when it fits). Each member of a
    rank is named equally often, and a requester's chunks spread over the holders."""

    def __init__(self, ranked: Sequence[Sequence[Candidate]], bound: int, rng: random.Random):
        self._draw = rng.random
        self._windows: list[tuple[list[Candidate], int, int]] = []
        room = bound
        for group in ranked:
            if room <= 0:
                break
            if not group:
                continue
            order = list(group)
            rng.shuffle(order)
            take = min(room, len(order))
            self._windows.append((order + order, len(order), take))
            room -= take

    def next(self) -> list[Candidate]:
        chosen: list[Candidate] = []
        for doubled, size, take in self._windows:
            start = int(self._draw() * size)
            chosen += doubled[start : start + take]
        return chosen


def fanout_members(waiting: Sequence[str], chunk: int, k: int) -> list[str]:
    """The fan-out members of a chunk that just got its first whole holder: `k` of the
    requesters `waiting` for it (in arrival order), rotating by chunk so that each relays a
    share of the blob's chunks."""
    if not waiting:
        return []
    start = chunk * k % len(waiting)
    return [waiting[(start + i) % len(waiting)] for i in range(min(k, len(waiting)))]
