"""Rendezvous hashing: the preheat target choice stays put as nodes come and go."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tracker import rendezvous

nodes_st = st.sets(st.text(alphabet="abcdef0123456789", min_size=1, max_size=8), max_size=30)


@given(nodes=nodes_st, count=st.integers(1, 10), key=st.text(max_size=20))
def test_choice_is_the_top_count_and_deterministic(nodes: set[str], count: int, key: str) -> None:
    chosen = rendezvous.choose(key, nodes, count)
    assert len(chosen) == min(count, len(nodes))
    assert chosen == rendezvous.choose(key, sorted(nodes, reverse=True), count)
    assert chosen == rendezvous.choose(key, nodes)[:count]


@given(nodes=nodes_st, newcomer=st.text(min_size=1, max_size=9), count=st.integers(1, 10))
def test_a_new_node_displaces_at_most_one_target(
    nodes: set[str], newcomer: str, count: int
) -> None:
    before = set(rendezvous.choose("img:1", nodes, count))
    after = set(rendezvous.choose("img:1", nodes | {newcomer}, count))
    assert len(before - after) <= 1
    assert after - before <= {newcomer}


@given(nodes=nodes_st, count=st.integers(1, 10))
def test_a_leaving_non_target_changes_nothing(nodes: set[str], count: int) -> None:
    chosen = rendezvous.choose("img:1", nodes, count)
    for gone in nodes - set(chosen):
        assert rendezvous.choose("img:1", nodes - {gone}, count) == chosen


def test_different_images_land_on_different_nodes() -> None:
    nodes = [f"node-{i}" for i in range(20)]
    firsts = {rendezvous.choose(f"image:{i}", nodes, 1)[0] for i in range(50)}
    assert len(firsts) > 5
