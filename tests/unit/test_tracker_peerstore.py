"""One conformance suite for every peer store (STYLE: an interface, its in-memory twin, one suite),
and a random-operations comparison of the indexed store against the plain twin."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.peerstore import IndexedPeerStore, ListPeerStore, PeerStore, indices_of, mask_of

D = "sha256:" + "d" * 64
E = "sha256:" + "e" * 64
STORES: dict[str, Callable[[], PeerStore]] = {
    "indexed": lambda: IndexedPeerStore(random.Random(1)),
    "list": lambda: ListPeerStore(random.Random(1)),
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest) -> PeerStore:
    return STORES[request.param]()


def test_masks_round_trip() -> None:
    assert indices_of(mask_of([0, 3, 64])) == [0, 3, 64]
    assert mask_of([]) == 0


def test_hold_reports_newly_complete_chunks(store: PeerStore) -> None:
    store.add_node("a", "")
    assert store.hold("a", D, mask_of([0, 1]), mask_of([2])) == mask_of([0, 1])
    assert store.hold("a", D, mask_of([1, 2]), 0) == mask_of([2])
    assert store.masks("a", D) == (mask_of([0, 1, 2]), 0)
    assert store.complete_count(D, 2) == 1


def test_partial_never_overrides_complete(store: PeerStore) -> None:
    store.add_node("a", "")
    store.hold("a", D, mask_of([0]), 0)
    store.hold("a", D, 0, mask_of([0, 1]))
    assert store.masks("a", D) == (mask_of([0]), mask_of([1]))


def test_handout_lists_complete_before_partial(store: PeerStore) -> None:
    for node_id in "abc":
        store.add_node(node_id, "")
    store.hold("a", D, 0, mask_of([0]))
    store.hold("b", D, mask_of([0]), 0)
    handout = store.handout(D, 0, "c", "", 10)
    assert [(p.node_id, p.complete) for p in handout] == [("b", True), ("a", False)]


def test_drop_and_remove_forget_holdings(store: PeerStore) -> None:
    store.add_node("a", "z")
    store.add_node("b", "z")
    store.hold("a", D, mask_of([0, 1]), 0)
    store.hold("a", E, mask_of([0]), 0)
    store.hold("b", D, mask_of([1]), 0)
    assert store.drop("a", E) == mask_of([0])
    assert not store.has_blob(E)
    assert store.remove_node("a") == {D: mask_of([0, 1])}
    assert store.complete_count(D, 0) == 0
    assert store.complete_count(D, 1) == 1
    assert store.holders(D) == {"b": (mask_of([1]), 0)}
    assert store.chunks_held(D) == 1
    assert store.blob_count("b") == 1


def test_unknown_things_are_empty(store: PeerStore) -> None:
    assert store.handout(D, 0, "x", "", 5) == []
    assert store.complete_count(D, 0) == 0
    assert store.holders(D) == {}
    assert store.holdings("x") == {}
    assert store.masks("x", D) == (0, 0)
    assert not store.has_blob(D)


operation = st.one_of(
    st.tuples(st.just("hold"), st.integers(0, 5), st.integers(0, 255), st.integers(0, 255)),
    st.tuples(st.just("drop"), st.integers(0, 5), st.just(0), st.just(0)),
    st.tuples(st.just("remove"), st.integers(0, 5), st.just(0), st.just(0)),
)


@settings(max_examples=200)
@given(st.lists(operation, max_size=40))
def test_indexed_store_agrees_with_its_twin(ops: list[tuple[str, int, int, int]]) -> None:
    indexed, plain = IndexedPeerStore(random.Random(0)), ListPeerStore(random.Random(0))
    present: set[str] = set()
    for name, n, complete, partial in ops:
        node_id = f"n{n}"
        if node_id not in present:
            present.add(node_id)
            indexed.add_node(node_id, "ab"[n % 2])
            plain.add_node(node_id, "ab"[n % 2])
        if name == "hold":
            assert indexed.hold(node_id, D, complete, partial) == plain.hold(
                node_id, D, complete, partial
            )
        elif name == "drop":
            assert indexed.drop(node_id, D) == plain.drop(node_id, D)
        else:
            assert indexed.remove_node(node_id) == plain.remove_node(node_id)
            present.discard(node_id)
        assert indexed.holders(D) == plain.holders(D)
        for chunk in range(8):
            assert indexed.complete_count(D, chunk) == plain.complete_count(D, chunk)
            big = {p.node_id: p.complete for p in indexed.handout(D, chunk, "n0", "a", 100)}
            assert big == {p.node_id: p.complete for p in plain.handout(D, chunk, "n0", "a", 100)}
        assert indexed.chunks_held(D) == plain.chunks_held(D)
        assert indexed.has_blob(D) == plain.has_blob(D)
