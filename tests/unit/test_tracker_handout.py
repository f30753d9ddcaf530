"""The peer handout ranking, as properties: bounded, never the requester, complete before partial,
same zone first, whole ranks before the next, shuffled within a rank. Both peer stores (the indexed
one the tracker runs and its plain twin) must give handouts with the same properties."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.handout import Candidate, Handouts, groups, pick, rank, rank_of
from tracker.peerstore import IndexedPeerStore, ListPeerStore, PeerStore

ZONES = ["", "a", "b", "c"]
NODE_IDS = [f"n{i}" for i in range(40)]

candidates_st = st.lists(
    st.builds(
        Candidate,
        node_id=st.sampled_from(NODE_IDS),
        zone=st.sampled_from(ZONES),
        complete=st.booleans(),
    ),
    max_size=60,
)


rank_cases = given(
    candidates=candidates_st,
    requester=st.sampled_from(NODE_IDS),
    zone=st.sampled_from(ZONES),
    bound=st.integers(min_value=0, max_value=50),
    seed=st.integers(min_value=0, max_value=2**32),
)


def check_handout(
    handout: list[Candidate],
    requester: str,
    zone: str,
    pool: dict[str, Candidate],
    bound: int,
) -> None:
    """`pool` holds every eligible candidate with its best rank, requester excluded."""
    ids = [c.node_id for c in handout]
    assert len(ids) == len(set(ids)), "a peer handed out twice"
    assert requester not in ids
    assert len(handout) == min(bound, len(pool))
    for candidate in handout:
        assert pool[candidate.node_id] == candidate, "not the candidate's best rank"
    ranks = [rank_of(c, zone) for c in handout]
    assert ranks == sorted(ranks), "ranks out of order"
    if handout:
        worst = ranks[-1]
        left_out = [c for c in pool.values() if c.node_id not in ids]
        assert all(rank_of(c, zone) >= worst for c in left_out), "a better-ranked peer left out"


def best_by_node(candidates: list[Candidate], requester: str, zone: str) -> dict[str, Candidate]:
    best: dict[str, Candidate] = {}
    for c in candidates:
        if c.node_id == requester:
            continue
        if c.node_id not in best or rank_of(c, zone) < rank_of(best[c.node_id], zone):
            best[c.node_id] = c
    return best


@rank_cases
def test_rank_is_bounded_ordered_and_never_names_the_requester(
    candidates: list[Candidate], requester: str, zone: str, bound: int, seed: int
) -> None:
    handout = rank(requester, zone, candidates, bound, random.Random(seed))
    check_handout(handout, requester, zone, best_by_node(candidates, requester, zone), bound)


@rank_cases
def test_picks_from_groups_made_once_are_the_handouts_rank_gives(
    candidates: list[Candidate], requester: str, zone: str, bound: int, seed: int
) -> None:
    """A Locate groups a blob's whole holders once and picks from them for every chunk: each
    pick is the handout ranking the candidates anew would give."""
    ranked = groups(requester, zone, candidates)
    reused, fresh = random.Random(seed), random.Random(seed)
    for _ in range(3):
        assert pick(ranked, bound, reused) == rank(requester, zone, candidates, bound, fresh)


@rank_cases
def test_handouts_for_many_chunks_follow_the_rules_of_one(
    candidates: list[Candidate], requester: str, zone: str, bound: int, seed: int
) -> None:
    handouts = Handouts(groups(requester, zone, candidates), bound, random.Random(seed))
    pool = best_by_node(candidates, requester, zone)
    for _ in range(5):
        check_handout(handouts.next(), requester, zone, pool, bound)


def test_handouts_for_many_chunks_name_every_holder_as_often() -> None:
    """A blob held whole by 20 nodes, 5 named per chunk: over 400 chunks each is named about
    100 times, and each comes first in some."""
    candidates = [Candidate(f"n{i}", "a", True) for i in range(20)]
    handouts = Handouts(groups("me", "a", candidates), 5, random.Random(2))
    named: Counter[str] = Counter()
    firsts: Counter[str] = Counter()
    for _ in range(400):
        handout = handouts.next()
        named.update(c.node_id for c in handout)
        firsts[handout[0].node_id] += 1
    assert set(named) == set(firsts) == {c.node_id for c in candidates}
    assert all(60 <= n <= 140 for n in named.values()), named


def test_rank_prefers_complete_over_same_zone() -> None:
    complete_far = Candidate("far", "b", True)
    partial_near = Candidate("near", "a", False)
    assert rank("me", "a", [partial_near, complete_far], 1, random.Random(1)) == [complete_far]


def test_rank_shuffles_within_a_rank() -> None:
    candidates = [Candidate(f"n{i}", "a", True) for i in range(5)]
    firsts = Counter(
        rank("me", "a", candidates, 5, random.Random(s))[0].node_id for s in range(200)
    )
    assert set(firsts) == {c.node_id for c in candidates}


holdings_st = st.lists(
    st.tuples(
        st.sampled_from(NODE_IDS[:25]),
        st.sampled_from(ZONES),
        st.booleans(),  # complete?
    ),
    max_size=40,
)


@settings(max_examples=150)
@given(
    holdings=holdings_st,
    requester=st.sampled_from(NODE_IDS[:25]),
    zone=st.sampled_from(ZONES),
    bound=st.integers(min_value=0, max_value=30),
    exclude=st.sets(st.sampled_from(NODE_IDS[:25]), max_size=3),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_both_peer_stores_hand_out_by_the_same_rules(
    holdings: list[tuple[str, str, bool]],
    requester: str,
    zone: str,
    bound: int,
    exclude: set[str],
    seed: int,
) -> None:
    for store in (IndexedPeerStore(random.Random(seed)), ListPeerStore(random.Random(seed))):
        zones: dict[str, str] = {}
        complete: dict[str, bool] = {}
        for node_id, node_zone, is_complete in holdings:
            if node_id not in zones:
                zones[node_id] = node_zone
                store.add_node(node_id, node_zone)
            store.hold(node_id, "sha256:d", int(is_complete) << 3, int(not is_complete) << 3)
            complete[node_id] = complete.get(node_id, False) or is_complete
        pool = {
            n: Candidate(n, zones[n], c)
            for n, c in complete.items()
            if n != requester and n not in exclude
        }
        handout = store_handout(store, requester, zone, bound, exclude)
        check_handout(handout, requester, zone, pool, bound)
        *chunk_3, chunk_2 = store.handouts("sha256:d", [3, 3, 2], requester, zone, bound, exclude)
        for handout in chunk_3:
            check_handout(handout, requester, zone, pool, bound)
        assert chunk_2 == []


def store_handout(
    store: PeerStore, requester: str, zone: str, bound: int, exclude: set[str]
) -> list[Candidate]:
    return store.handout("sha256:d", 3, requester, zone, bound, exclude)


def test_indexed_store_spreads_requesters_over_a_popular_chunk() -> None:
    store = IndexedPeerStore(random.Random(7))
    for i in range(500):
        store.add_node(f"n{i}", "a")
        store.hold(f"n{i}", "sha256:d", 1, 0)
    seen: Counter[str] = Counter()
    for _ in range(100):
        seen.update(c.node_id for c in store.handout("sha256:d", 0, "me", "a", 10))
    assert len(seen) > 300  # 1000 picks over 500 holders: a fixed prefix would give 10


def test_indexed_store_shuffles_a_small_rank() -> None:
    store = IndexedPeerStore(random.Random(5))
    for i in range(5):
        store.add_node(f"n{i}", "a")
        store.hold(f"n{i}", "sha256:d", 1, 0)
    firsts = Counter(store.handout("sha256:d", 0, "me", "a", 5)[0].node_id for _ in range(200))
    assert set(firsts) == {f"n{i}" for i in range(5)}
