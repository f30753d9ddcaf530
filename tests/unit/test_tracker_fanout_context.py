"""`FanoutContext.some_waiting`, as properties: a bounded look at a chunk's waiting requesters,
each of them waiting and none skipped, in arrival order from where it starts, round."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tracker.store import FanoutContext

NODE_IDS = [f"n{i}" for i in range(12)]


@st.composite
def contexts(draw: st.DrawFn) -> FanoutContext:
    requesters = draw(st.lists(st.sampled_from(NODE_IDS), unique=True, max_size=12))
    alive = draw(st.sets(st.sampled_from(requesters))) if requesters else set()
    masks = {r: (draw(st.integers(0, 3)), draw(st.integers(0, 3))) for r in requesters}
    return FanoutContext(2, {}, requesters, {r: "" for r in alive}, masks)


@given(
    contexts(),
    st.integers(0, 1),
    st.sets(st.sampled_from(NODE_IDS)),
    st.integers(0, 13),
    st.integers(0, 100),
)
def test_some_waiting_is_a_bounded_look_at_those_waiting(
    context: FanoutContext, chunk: int, skip: set[str], bound: int, start: int
) -> None:
    found = context.some_waiting(chunk, skip, bound, start)
    waiting = [r for r in context.waiting(chunk, "") if r not in skip]
    assert len(found) == min(bound, len(waiting))
    assert set(found) <= set(waiting)
    if context.requesters:
        count = len(context.requesters)
        order = [context.requesters[(start + i) % count] for i in range(count)]
        assert found == [r for r in order if r in waiting][: len(found)]


def test_different_starts_name_different_requesters() -> None:
    requesters = [f"r{i}" for i in range(6)]
    context = FanoutContext(1, {}, requesters, dict.fromkeys(requesters, ""), {})
    assert context.some_waiting(0, {"r1"}, 2, 0) == ["r0", "r2"]
    assert context.some_waiting(0, {"r1"}, 2, 5) == ["r5", "r0"]
    assert context.some_waiting(0, set(), 0, 3) == []
