"""One conformance suite for the tracker's stores (STYLE: an interface, its in-memory twin, one
suite): every test runs against the in-memory store and against Redis (a real redis-server).
The last tests are Redis's own: two stores on one Redis are two replicas of one tracker."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest

from tests.support.stores import STORES, fresh_store, live_replica
from tracker.errors import FailedPrecondition, TaskUnknown
from tracker.hub import Changed, Gone, Hub, Orders
from tracker.nodes import Load, Node
from tracker.peerstore import ListPeerStore, mask_of
from tracker.store import Caps, Claim, Replica, Store
from tracker.store.config import MAX_CONNECTIONS, StoreConfig, open_store
from tracker.store.memory import MemoryPeers
from tracker.store.redisstore import RedisStore
from tracker.tasks import CheckOrder, PreheatOrder, RepublishOrder, TaskState

D = "sha256:" + "d" * 64
E = "sha256:" + "e" * 64
TTL = 10.0
CAPS = Caps(per_node=8, per_blob=8, total=8)


@pytest.fixture
def hub() -> Hub:
    return Hub()


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, hub: Hub) -> AsyncIterator[Store]:
    made = await fresh_store(request, request.param, TTL, random.Random(1))
    await made.start(hub)
    yield made
    await made.close()


async def member(store: Store, node_id: str, zone: str = "", now: float = 100.0) -> Node:
    node, _ = await store.members.join(
        Node(node_id, "i", f"{node_id}:1", f"{node_id}:2", zone, now, now), 1000
    )
    await store.peers.add_node(node_id, zone)
    return node


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# ---- members ----


async def test_joining_again_replaces_the_record_with_a_later_epoch(store: Store) -> None:
    first = await member(store, "a", "z1")
    second, previous = await store.members.join(Node("a", "j", "r:1", "p:2", "z2", 5, 5), 100)
    assert previous is not None and previous.epoch == first.epoch and previous.zone == "z1"
    assert second.epoch > first.epoch
    assert (await store.members.get("a")) == second
    assert await store.members.count() == 1


async def test_a_full_cluster_takes_no_new_member(store: Store) -> None:
    await store.members.join(Node("a", "i", "a:1", "a:2", "", 1, 1), 1)
    with pytest.raises(FailedPrecondition):
        await store.members.join(Node("b", "i", "b:1", "b:2", "", 1, 1), 1)
    await store.members.join(Node("a", "i", "a:1", "a:2", "", 1, 1), 1)


async def test_a_burst_of_calls_beyond_the_stores_connections_all_get_answers(
    store: Store,
) -> None:
    """More calls at once than a replica keeps connections to Redis (every node joining again
    after Redis restarted): each waits for a connection, none fails."""
    a = await member(store, "a")
    found = await asyncio.gather(*(store.members.get("a") for _ in range(500)))
    assert found == [a] * 500


async def test_calls_queued_behind_busy_connections_longer_than_a_command_wait(
    store: Store,
) -> None:
    """Every connection of the replica is taken by slow calls, twice over, each shorter than the
    command timeout: a call queued behind them waits longer than the command timeout in all,
    and gets its answer, not "unreachable"."""
    a = await member(store, "a")
    if isinstance(store, RedisStore):
        slow = [store.client.blpop(["di:nothing"], timeout=1.5) for _ in range(2 * MAX_CONNECTIONS)]
        busy = asyncio.gather(*slow)
        await asyncio.sleep(0.2)
        assert await store.members.get("a") == a
        await busy
    assert await store.members.get("a") == a


async def test_heartbeats_expiry_and_silence(store: Store) -> None:
    for node_id in "abc":
        await member(store, node_id, now=100)
    assert await store.members.heartbeat("x", 101, Load()) is None
    assert await store.members.heartbeat("a", 110, Load(uploads=3)) is False
    assert (await store.members.get("a")).load.uploads == 3  # type: ignore[union-attr]
    assert sorted(await store.members.silence(105)) == ["b", "c"]
    assert await store.members.silence(105) == [], "silenced once"
    assert await store.members.silent() == {"b", "c"}
    assert await store.members.heartbeat("b", 111, Load()) is True
    expired = await store.members.expire(108)
    assert [n.id for n in expired] == ["c"]
    assert await store.members.expire(108) == [], "expired once"
    assert await store.members.silent() == frozenset()
    assert sorted(await store.members.many(["a", "b", "c"])) == ["a", "b"]
    gone = await store.members.remove("a")
    assert gone is not None and gone.id == "a"
    assert await store.members.remove("a") is None


async def test_heartbeats_at_once_each_get_their_own_answer(store: Store) -> None:
    """Many heartbeats at once (a replica's usual load), known nodes, a silent one and an
    unknown one among them: each is answered for its own node and its figures are kept."""
    ids = [f"n{i}" for i in range(600)]
    for node_id in ids:
        await member(store, node_id, now=100)
    await store.members.silence(150)
    await store.members.heartbeat("n0", 200, Load())
    beats = [store.members.heartbeat(n, 200, Load(uploads=i)) for i, n in enumerate(ids)]
    answers = await asyncio.gather(*beats, store.members.heartbeat("ghost", 200, Load()))
    assert answers == [False] + [True] * 599 + [None]
    assert await store.members.silent() == frozenset()
    assert (await store.members.get("n42")).load.uploads == 42  # type: ignore[union-attr]
    assert await store.members.expire(150) == []


async def test_heartbeats_at_once_cost_redis_one_script_call(store: Store) -> None:
    if not isinstance(store, RedisStore):
        pytest.skip("Redis's own counters")
    for node_id in "abc":
        await member(store, node_id, now=100)
    await store.client.config_resetstat()
    await asyncio.gather(*(store.members.heartbeat(n, 200, Load()) for n in "abc" * 10))
    calls = (await store.client.info("commandstats"))["cmdstat_evalsha"]["calls"]
    assert calls == 1


async def test_addresses_name_where_each_member_is_reached(store: Store) -> None:
    await member(store, "a", "z1")
    found = await store.members.addresses(["a", "ghost"])
    assert list(found) == ["a"]
    node = found["a"]
    assert (node.id, node.registry, node.peer, node.zone) == ("a", "a:1", "a:2", "z1")


# ---- peers: the cases of tracker.peerstore's suite, and a comparison with its plain twin ----


async def test_hold_reports_newly_complete_chunks(store: Store) -> None:
    await member(store, "a")
    assert await store.peers.hold("a", D, mask_of([0, 1]), mask_of([2])) == mask_of([0, 1])
    assert await store.peers.hold("a", D, mask_of([1, 2]), 0) == mask_of([2])
    assert await store.peers.masks("a", D) == (mask_of([0, 1, 2]), 0)
    assert await store.peers.complete_counts(D, [2, 3]) == [1, 0]
    await store.peers.hold("a", D, 0, mask_of([0, 5]))
    assert await store.peers.masks("a", D) == (mask_of([0, 1, 2]), mask_of([5]))


async def test_handout_ranks_and_excludes(store: Store) -> None:
    for node_id, zone in (("near", "z1"), ("far", "z2"), ("part", "z1"), ("me", "z1")):
        await member(store, node_id, zone)
    await store.peers.hold("near", D, 1, 0)
    await store.peers.hold("far", D, 1, 0)
    await store.peers.hold("part", D, 0, 1)
    await store.peers.hold("me", D, 1, 0)
    handout = await store.peers.handout(D, 0, "me", "z1", 10)
    assert [(p.node_id, p.complete) for p in handout] == [
        ("near", True),
        ("far", True),
        ("part", False),
    ]
    assert [p.node_id for p in await store.peers.handout(D, 0, "me", "z1", 1)] == ["near"]
    excluded = await store.peers.handout(D, 0, "me", "z1", 10, exclude={"near"})
    assert [p.node_id for p in excluded] == ["far", "part"]


async def test_a_popular_chunk_is_handed_out_from_holders_spread_over_calls(store: Store) -> None:
    """Sixty nodes hold blob D whole and chunk 0 of E whole, and sixty others hold both in part:
    each handout names complete holders only, distinct, never the requester, and successive
    handouts name different ones (the holders share the requesters' load)."""
    await store.blobs.ensure(D, 4 * 4096, 4)
    await store.blobs.ensure(E, 4 * 4096, 4)
    for i in range(120):
        await member(store, f"n{i}", "z")
        whole = i < 60
        await store.peers.hold(f"n{i}", D, 0b1111 if whole else 0, 0 if whole else 0b1111)
        await store.peers.hold(f"n{i}", E, 1 if whole else 0, 0 if whole else 1)
    for digest in (D, E):
        named: set[str] = set()
        for _ in range(30):
            handout = await store.peers.handout(digest, 0, "n0", "z", 5)
            ids = [p.node_id for p in handout]
            assert len(ids) == 5 and len(set(ids)) == 5 and "n0" not in ids
            assert all(p.complete and int(p.node_id[1:]) < 60 for p in handout)
            named |= set(ids)
        assert len(named) > 20, named
        states = await store.chunk_states(digest, [0], "n0", "z", 5, False)
        assert states[0].sources == 60 and len(states[0].peers) == 5


async def test_a_holder_of_the_whole_blob_that_drops_it_or_leaves_is_nobodys_peer(
    store: Store,
) -> None:
    await store.blobs.ensure(D, 4 * 4096, 4)
    for node_id in ("a", "b", "c", "me"):
        await member(store, node_id, "z")
    await store.peers.hold("a", D, mask_of([0]), mask_of([1]))
    await store.peers.hold("a", D, mask_of([1, 2, 3]), 0)  # now the whole blob
    await store.peers.hold("b", D, mask_of([0]), mask_of([1]))
    await store.peers.hold("c", D, 0b1111, 0)
    assert await store.peers.complete_counts(D, [0, 1, 2]) == [3, 2, 2]
    handout = await store.peers.handout(D, 1, "me", "z", 10)
    assert sorted((p.node_id, p.complete) for p in handout) == [
        ("a", True),
        ("b", False),
        ("c", True),
    ]
    assert await store.peers.drop("a", D) == 0b1111
    assert await store.peers.remove_node("c") == {D: 0b1111}
    for chunk, expected in ((0, [("b", True)]), (1, [("b", False)]), (2, [])):
        handout = await store.peers.handout(D, chunk, "me", "z", 10)
        assert [(p.node_id, p.complete) for p in handout] == expected
        states = await store.chunk_states(D, [chunk], "me", "z", 10, False)
        assert [(p.node_id, p.complete) for p in states[0].peers] == expected
    assert await store.peers.complete_counts(D, [0, 1, 2]) == [1, 0, 0]


async def test_drop_and_remove_forget_holdings(store: Store) -> None:
    await member(store, "a", "z")
    await member(store, "b", "z")
    await store.peers.hold("a", D, mask_of([0, 1]), 0)
    await store.peers.hold("a", E, mask_of([0]), 0)
    await store.peers.hold("b", D, mask_of([1]), 0)
    assert await store.peers.drop("a", E) == mask_of([0])
    assert not await store.peers.has_blob(E)
    assert await store.peers.remove_node("a") == {D: mask_of([0, 1])}
    assert await store.peers.complete_counts(D, [0, 1]) == [0, 1]
    assert await store.peers.holders(D) == {"b": (mask_of([1]), 0)}
    assert await store.peers.chunks_held(D) == 1
    assert await store.peers.blob_count("b") == 1
    assert await store.peers.holdings("a") == {}


@pytest.mark.parametrize("shape_known", [False, True])
async def test_peers_agree_with_the_plain_twin_under_random_operations(
    store: Store, shape_known: bool
) -> None:
    """With the blob's shape known, a node that comes to hold every chunk whole is kept as a
    holder of the whole blob (one entry, not one per chunk): the answers stay the same."""
    twin = MemoryPeers(ListPeerStore(random.Random(0)))
    rng = random.Random(5)
    if shape_known:
        await store.blobs.ensure(D, 12 * 4096, 12)
    present: set[str] = set()
    for _ in range(150):
        node_id = f"n{rng.randrange(5)}"
        if node_id not in present:
            present.add(node_id)
            await member(store, node_id, "ab"[int(node_id[1]) % 2])
            await twin.add_node(node_id, "ab"[int(node_id[1]) % 2])
        action = rng.random()
        if action < 0.6:
            complete, partial = rng.randrange(1 << 12), rng.randrange(1 << 12)
        if rng.random() < 0.2:
            complete = (1 << 12) - 1
            expected = await twin.hold(node_id, D, complete, partial)
            assert await store.peers.hold(node_id, D, complete, partial) == expected
        elif action < 0.8:
            assert await store.peers.drop(node_id, D) == await twin.drop(node_id, D)
        else:
            assert await store.peers.remove_node(node_id) == await twin.remove_node(node_id)
            present.discard(node_id)
        assert await store.peers.holders(D) == await twin.holders(D)
        chunks = list(range(12))
        assert await store.peers.complete_counts(D, chunks) == await twin.complete_counts(D, chunks)
        for chunk in (3, 11):
            handout = await store.peers.handout(D, chunk, "n0", "a", 100)
            plain = await twin.handout(D, chunk, "n0", "a", 100)
            assert {p.node_id: p.complete for p in handout} == {
                p.node_id: p.complete for p in plain
            }
        states = await store.chunk_states(D, chunks, "n0", "a", 100, False)
        for state in states:
            plain = await twin.handout(D, state.index, "n0", "a", 100)
            assert {(p.node_id, p.complete) for p in state.peers} == {
                (p.node_id, p.complete) for p in plain
            }
        assert await store.peers.chunks_held(D) == await twin.chunks_held(D)


# ---- leases ----


async def test_a_grant_leases_cold_chunks_in_order_under_the_caps(store: Store) -> None:
    for node_id in "abc":
        await member(store, node_id)
    await store.peers.hold("c", D, mask_of([1]), 0)  # chunk 1 has a source
    granted = await store.leases.grant("a", D, [0, 1, 2, 3], 5.0, Caps(2, 8, 8))
    assert granted == [0, 2]
    assert await store.leases.grant("b", D, [0, 2, 3, 4], 5.0, Caps(8, 3, 8)) == [3]
    assert await store.leases.grant("b", D, [5], 5.0, Caps(8, 8, 3)) == []
    assert await store.leases.fetching(D) == 3 and await store.leases.fetching() == 3
    assert await store.leases.count("a", D) == 2 and await store.leases.total() == 3
    lease = await store.leases.get(D, 0)
    assert lease is not None and (lease.holder, lease.granted_at) == ("a", 5.0)
    assert await store.leases.grant("ghost", E, [0], 5.0, CAPS) == [], "not a member"


async def test_an_unconfirmed_grant_also_leases_a_chunk_one_node_holds_without_metainfo(
    store: Store,
) -> None:
    """A single holder's metainfo is not taken alone: its chunk may be leased, so that a fetch
    confirms it; not one held by two (their metainfo confirms itself), nor one whose metainfo
    is known, nor by a plain grant."""
    for node_id in "abcd":
        await member(store, node_id)
    await store.peers.hold("c", D, mask_of([0, 1, 2]), 0)
    await store.peers.hold("d", D, mask_of([1]), 0)
    await store.blobs.publish(D, 2, b"meta2")
    assert await store.leases.grant("a", D, [0, 1, 2], 5.0, CAPS) == []
    assert await store.leases.grant("a", D, [0, 1, 2], 5.0, CAPS, unconfirmed=True) == [0]
    assert await store.leases.grant("c", D, [3], 5.0, CAPS, unconfirmed=True) == [3], "cold"


async def test_one_chunk_asked_for_at_once_through_two_replicas_is_leased_once(
    request: pytest.FixtureRequest, store: Store
) -> None:
    """Sixty members ask for one cold chunk at the same moment, every other one through a second
    replica on the same Redis: exactly one lease, held by the one the grant answered."""
    other = store
    if store.shared:
        url = request.getfixturevalue("redis_server").url
        other = open_store(StoreConfig(store=url), TTL, random.Random(2))
    try:
        names = [f"n{i}" for i in range(60)]
        for name in names:
            await member(store, name)
        replicas = [store, other]
        results = await asyncio.gather(
            *(replicas[i % 2].leases.grant(n, D, [0], 5.0, CAPS) for i, n in enumerate(names))
        )
        winners = [n for n, granted in zip(names, results, strict=True) if granted]
        assert len(winners) == 1, winners
        lease = await other.leases.get(D, 0)
        assert lease is not None and lease.holder == winners[0]
        assert await store.leases.fetching(D) == 1 and await store.leases.total() == 1
    finally:
        if other is not store:
            await other.close()


async def test_a_silent_source_is_no_source_and_a_holder_takes_no_lease_on_its_own(
    store: Store,
) -> None:
    for node_id in "ab":
        await member(store, node_id)
    await store.peers.hold("a", D, mask_of([0, 1]), 0)
    assert await store.leases.grant("b", D, [0], 1.0, CAPS) == []
    await store.members.silence(150)  # both silent: a is no source any more
    assert await store.leases.grant("a", D, [0, 1, 2], 1.0, CAPS) == [2]
    assert await store.leases.grant("b", D, [0, 1], 1.0, CAPS) == [0, 1]


async def test_renewal_extends_only_with_progress_and_lapses_once(store: Store) -> None:
    await member(store, "a")
    await store.leases.grant("a", D, [0, 1], 0.0, CAPS)
    assert await store.leases.renew("b", D, 0, 1, 1.0) is None, "only the holder renews"
    renewed = await store.leases.renew("a", D, 0, 100, 3.0)
    assert renewed is not None and renewed.expires_at == 3.0 + TTL and renewed.progress == 100
    same = await store.leases.renew("a", D, 0, 100, 8.0)
    assert same is not None and same.expires_at == 3.0 + TTL
    # chunk 1 was never renewed: it lapses after the first-renewal time.
    assert [(lease.chunk, lease.holder) for lease in await store.leases.expire(4.0)] == [(1, "a")]
    assert await store.leases.expire(4.0) == []
    assert await store.leases.expire(12.9) == []
    assert [lease.chunk for lease in await store.leases.expire(13.0)] == [0]
    assert await store.leases.total() == 0 and not await store.leases.leased(D)
    assert await store.leases.fetching() == 0


async def test_a_fetched_lease_frees_its_slot_and_releases_end_leases(store: Store) -> None:
    for node_id in "ab":
        await member(store, node_id)
    await store.leases.grant("a", D, [0, 1], 0.0, CAPS)
    await store.leases.grant("b", E, [0], 0.0, CAPS)
    assert await store.leases.fetched(D, 0)
    assert not await store.leases.fetched(D, 0)
    assert (await store.leases.fetching(D), await store.leases.fetching()) == (1, 2)
    assert await store.leases.release(D, [0, 1], holder="b") == []
    assert [lease.chunk for lease in await store.leases.release(D, [0], holder="a")] == [0]
    assert (await store.leases.fetching(D), await store.leases.fetching()) == (1, 2)
    assert [(lease.digest, lease.chunk) for lease in await store.leases.held_by("a")] == [(D, 1)]
    assert [lease.chunk for lease in await store.leases.release_holder("a")] == [1]
    assert [lease.holder for lease in await store.leases.all()] == ["b"]
    assert await store.leases.fetching() == 1


# ---- blobs ----


async def test_a_blob_keeps_its_first_shape_and_metainfo(store: Store) -> None:
    assert await store.blobs.shape(D) is None
    assert await store.blobs.ensure(D, 100, 2) == (100, 2)
    assert await store.blobs.ensure(D, 200, 3) == (100, 2)
    assert await store.blobs.publish(D, 1, b"meta") is None
    assert await store.blobs.publish(D, 1, b"other") == b"meta"
    assert await store.blobs.metainfo(D, 1) == b"meta"
    assert await store.blobs.published(D) == [1]
    await store.blobs.forget_metainfo(D, [1])
    assert await store.blobs.metainfo(D, 1) is None
    assert await store.blobs.shapes() == {D: (100, 2)} and await store.blobs.count() == 1


async def test_a_shape_changes_only_while_nobody_holds_or_leases_a_chunk(store: Store) -> None:
    for node_id in "ab":
        await member(store, node_id)
    assert await store.reshape(D, 200, 3) is None, "an unknown blob stays unknown"
    assert await store.blobs.request(D, 100, 2, "a", 1.0, 8) == ((100, 2), True)
    await store.blobs.publish(D, 1, b"meta")
    assert await store.leases.grant("a", D, [0], 1.0, Caps(8, 8, 8)) == [0]
    assert await store.reshape(D, 200, 3) == (100, 2)
    await store.leases.release(D, [0], holder="a")
    await store.peers.hold("b", D, 0b1, 0)
    assert await store.reshape(D, 200, 3) == (100, 2)
    await store.peers.drop("b", D)
    assert await store.reshape(D, 200, 3) == (200, 3)
    assert await store.blobs.shape(D) == (200, 3) and await store.blobs.metainfo(D, 1) is None
    assert await store.blobs.requesters(D) == ["a"]


async def test_requests_record_the_blob_and_its_requesters_within_bounds(store: Store) -> None:
    assert await store.blobs.request(D, 100, 2, "b", 1.0, 1) == ((100, 2), True)
    assert await store.blobs.request(D, 100, 2, "a", 2.0, 1) == ((100, 2), True)
    assert await store.blobs.request(D, 100, 2, "b", 3.0, 1) == ((100, 2), True)
    assert await store.blobs.requesters(D) == ["b", "a"], "in the order they first asked"
    assert await store.blobs.stale_requesters(D, 2.5) == ["a"]
    # Refused, and nothing recorded: another shape, or a node at its bound asking anew.
    assert await store.blobs.request(D, 200, 3, "c", 4.0, 1) == ((100, 2), True)
    assert await store.blobs.request(E, 100, 2, "a", 4.0, 1) == ((100, 2), False)
    assert await store.blobs.requesters(D) == ["b", "a"] and await store.blobs.shape(E) is None
    await store.blobs.forget_requester(D, "a")
    assert await store.blobs.request(E, 9, 1, "a", 5.0, 1) == ((9, 1), True)


async def test_fanout_and_republish_asks(store: Store) -> None:
    for node_id, at in (("b", 1.0), ("a", 2.0)):
        await store.blobs.request(D, 100, 2, node_id, at, 10)
    await store.blobs.request(E, 100, 2, "a", 2.0, 10)
    assert sorted(await store.blobs.asked("a")) == [D, E]
    await store.blobs.forget_requester(D, "a")
    assert await store.blobs.requesters(D) == ["b"]
    assert (await store.blobs.asked("a"), await store.blobs.asked("b")) == ([E], [D])
    assert await store.blobs.join_fanout(D, 0, "x", 1.0, 2)
    assert await store.blobs.join_fanout(D, 0, "y", 1.0, 2)
    assert not await store.blobs.join_fanout(D, 0, "z", 1.0, 2)
    assert await store.blobs.join_fanout(D, 0, "x", 5.0, 2), "a member stays one"
    assert await store.blobs.fanout(D, 0) == {"x": 1.0, "y": 1.0}
    await store.blobs.leave_fanout(D, 0, ["x"])
    await store.blobs.set_fanout(D, 1, {"p": 2.0})
    assert (await store.blobs.fanout(D, 0), await store.blobs.fanout(D, 1)) == (
        {"y": 1.0},
        {"p": 2.0},
    )
    assert await store.blobs.ask_republish(D, 0, 10.0, 2.0)
    assert not await store.blobs.ask_republish(D, 0, 11.0, 2.0)
    assert await store.blobs.ask_republish(D, 0, 12.0, 2.0)
    await store.blobs.clear_republish(D, 0)
    assert await store.blobs.ask_republish(D, 0, 12.5, 2.0)


async def test_a_relay_from_a_seed_relays_a_window_of_chunks_it_lacks(store: Store) -> None:
    """Blobs.join_relay: a chunk has one relay; a node relays at most `window` chunks it does
    not hold whole, over all the blobs it asked about, and a chunk it got frees a place in its
    window."""
    for node_id in ("r", "q"):
        await member(store, node_id)

    async def join(chunk: int, node_id: str, now: float = 1.0, digest: str = D) -> bool:
        await store.blobs.request(digest, 100, 8, node_id, now, 10)
        return await store.blobs.join_relay(digest, chunk, node_id, now, 2, 10.0)

    assert await join(5, "q", digest=E) and await join(6, "q", digest=E)
    assert await join(0, "r") and await join(1, "r")
    assert not await join(2, "r"), "a full window"
    assert await join(0, "r", 5.0), "a relay stays the relay"
    assert not await join(0, "q"), "a chunk has one relay"
    assert await store.blobs.fanout(D, 0) == {"r": 1.0}
    await store.peers.hold("r", D, mask_of([0]), 0)  # r got chunk 0: its window has room
    assert await join(2, "r")
    assert not await join(3, "r")
    assert not await join(3, "q"), "q relays two chunks of another blob"
    await store.peers.hold("q", E, mask_of([5]), 0)
    assert await join(3, "q")
    await store.blobs.leave_fanout(D, 1, ["r"])
    assert not await join(1, "q")
    await store.peers.hold("q", E, mask_of([6]), 0)
    assert await join(1, "q") and not await join(1, "r")
    assert [await store.blobs.fanout(D, c) for c in range(4)] == [
        {"r": 1.0},
        {"q": 1.0},
        {"r": 1.0},
        {"q": 1.0},
    ]


async def test_a_relaying_never_started_leaves_the_window_after_a_while(store: Store) -> None:
    """Blobs.join_relay: a membership older than `stale_after` on a chunk the node holds none of
    no longer counts against its window; one on a chunk it holds part of still does."""
    await member(store, "r")

    async def join(chunk: int, now: float, digest: str = D) -> bool:
        await store.blobs.request(digest, 100, 8, "r", now, 10)
        return await store.blobs.join_relay(digest, chunk, "r", now, 1, 2.0)

    assert await join(0, 1.0)
    assert not await join(5, 3.0, E), "a full window, within stale_after"
    assert await join(5, 3.5, E), "chunk 0 was never started"
    await store.peers.hold("r", E, 0, mask_of([5]))  # r swarms chunk 5 of E
    assert not await join(6, 9.0, E), "a relaying under way counts however old"
    assert await store.blobs.fanout(D, 0) == {"r": 1.0}, "the chunk's own members are kept"


async def test_metainfo_from_a_witness_waits_for_a_second_one(store: Store) -> None:
    assert not await store.blobs.witness(D, 0, "ab12", "a")
    assert not await store.blobs.witness(D, 0, "ab12", "a"), "the same node twice is one witness"
    assert not await store.blobs.witness(D, 0, "cd34", "b"), "other bytes replace what waited"
    assert not await store.blobs.witness(D, 1, "cd34", "c"), "another chunk"
    assert await store.blobs.witness(D, 0, "cd34", "c")
    assert not await store.blobs.witness(D, 0, "cd34", "d"), "confirmed once, then forgotten"


async def test_watches_are_counted_per_stream_and_forgotten_with_their_node(store: Store) -> None:
    await live_replica(store, "r1")
    await store.blobs.add_watch(E, "b", "r1:1")
    await store.blobs.add_watch(D, "a", "r1:2")
    await store.blobs.add_watch(D, "a", "r1:3")
    await store.blobs.add_watch(D, "b", "r1:4")
    assert await store.blobs.watched() == [E, D], "the longest watched first"
    assert await store.blobs.watchers(D) == ["a", "b"]
    await store.blobs.remove_watch(D, "a", "r1:2")
    assert await store.blobs.watchers(D) == ["a", "b"], "a still watches through stream 3"
    await store.blobs.request(D, 100, 2, "a", 1.0, 10)
    assert await store.blobs.forget_node("a") == {D}
    assert await store.blobs.watchers(D) == ["b"] and await store.blobs.requesters(D) == []
    await store.blobs.remove_watch(D, "a", "r1:3")  # a stream ending after its node left
    await store.blobs.remove_watch(D, "b", "r1:4")
    assert await store.blobs.watched() == [E]


async def test_blobs_watched_ahead_come_first_in_the_order_they_were_watched(store: Store) -> None:
    config = "sha256:" + "c" * 64
    await live_replica(store, "r1")
    await store.blobs.add_watch(D, "a", "r1:1")
    await store.blobs.add_watch(E, "a", "r1:2", ahead=True)
    await store.blobs.add_watch(config, "b", "r1:3", ahead=True)
    await store.blobs.add_watch(D, "b", "r1:4", ahead=True)  # watched already: keeps its place
    assert await store.blobs.watched() == [E, config, D]
    await store.blobs.remove_watch(E, "a", "r1:2")
    assert await store.blobs.watched() == [config, D]


async def test_an_idle_blob_is_dropped_and_a_used_one_is_not(store: Store) -> None:
    await live_replica(store, "r1")
    await member(store, "a")
    await store.blobs.ensure(D, 100, 2)
    await store.blobs.publish(D, 0, b"meta")
    for use, undo in (
        (store.blobs.request(D, 100, 2, "a", 1.0, 10), store.blobs.forget_requester(D, "a")),
        (store.blobs.add_watch(D, "a", "r1:1"), store.blobs.remove_watch(D, "a", "r1:1")),
        (store.peers.hold("a", D, 1, 0), store.peers.drop("a", D)),
        (store.leases.grant("a", D, [0], 1.0, CAPS), store.leases.release(D, [0])),
    ):
        await use
        assert not await store.drop_if_idle(D)
        await undo
    assert await store.drop_if_idle(D)
    assert await store.blobs.shape(D) is None and await store.blobs.metainfo(D, 0) is None


# ---- refs, preheat jobs, orders ----


async def test_refs_resolve_to_the_most_held_digest_first(store: Store) -> None:
    ref = "docker.io/library/app:1"
    for node_id in "abc":
        await store.refs.add(node_id, ref, D)
    await store.refs.add("c", ref, E)
    assert [(r.digest, r.holders) for r in await store.refs.resolve(ref)] == [
        (D, ("a", "b", "c")),
        (E, ("c",)),
    ]
    assert await store.refs.count("c") == 2
    await store.refs.drop_node("c")
    await store.refs.remove("a", ref, D)
    assert [(r.digest, r.holders) for r in await store.refs.resolve(ref)] == [(D, ("b",))]
    await store.refs.remove("b", ref, D)
    assert await store.refs.resolve(ref) == []


async def test_a_preheat_job_goes_to_done_or_failed(store: Store) -> None:
    job = await store.tasks.create("img:1", ["a", "b", "c"], 10.0, 5.0)
    assert await store.tasks.count() == 1
    await store.tasks.delivered("a", job.id)
    await store.tasks.report("a", job.id, True, "", 11.0)
    await store.tasks.node_gone("b", "node left", 11.0)
    assert [j.id for j in await store.tasks.unfinished_for("c")] == [job.id]
    await store.tasks.delivered("c", job.id)
    await store.tasks.pending("c", job.id)
    got = await store.tasks.get(job.id)
    assert {n: t.state for n, t in got.targets.items()} == {
        "a": TaskState.DONE,
        "b": TaskState.FAILED,
        "c": TaskState.PENDING,
    }
    assert got.targets["b"].message == "node left" and not got.finished
    await store.tasks.expire(16.0)
    got = await store.tasks.get(job.id)
    assert got.finished and got.targets["c"].message == "timed out" and got.finished_at == 16.0
    await store.tasks.report("a", job.id, False, "late", 17.0)  # a finished target stays finished
    assert (await store.tasks.get(job.id)).targets["a"].state is TaskState.DONE
    with pytest.raises(TaskUnknown):
        await store.tasks.report("x", job.id, True, "", 17.0)
    await store.tasks.expire(16.0 + 3600)
    with pytest.raises(TaskUnknown):
        await store.tasks.get(job.id)


async def test_orders_queue_up_to_a_bound(store: Store) -> None:
    orders = [
        PreheatOrder("preheat-1", "img:1"),
        RepublishOrder("republish-2", D, 9, 2, (0, 1)),
        CheckOrder("check-3", D, 9, 2, (1,)),
    ]
    for order in orders:
        assert await store.tasks.push("a", order, 3)
    assert not await store.tasks.push("a", orders[0], 3)
    popped = [await store.tasks.pop("a") for _ in range(4)]
    assert popped == [*orders, None]
    assert [type(order) for order in popped[:3]] == [PreheatOrder, RepublishOrder, CheckOrder]
    await store.tasks.push("a", orders[0], 2)
    await store.tasks.clear("a")
    assert await store.tasks.pop("a") is None
    assert (await store.tasks.next_id("x")) != (await store.tasks.next_id("x"))


# ---- reads across the parts, replicas, notifications ----


async def test_chunk_states_cold_chunks_and_candidacies(store: Store) -> None:
    for node_id in "abc":
        await member(store, node_id)
    await store.blobs.ensure(D, 400, 4)
    await store.peers.hold("b", D, mask_of([0]), mask_of([1]))
    await store.blobs.publish(D, 0, b"meta0")
    await store.leases.grant("a", D, [2], 7.0, CAPS)
    states = await store.chunk_states(D, [0, 1, 2], "c", "", 5, True)
    assert [(s.sources, s.published, s.metainfo) for s in states] == [
        (1, True, b"meta0"),
        (0, False, None),
        (0, False, None),
    ]
    assert [[(p.node_id, p.complete) for p in s.peers] for s in states] == [
        [("b", True)],
        [("b", False)],
        [],
    ]
    assert states[2].lease is not None and states[2].lease.holder == "a"
    assert await store.cold_chunks(D, 4, frozenset()) == [1, 3]
    assert await store.cold_chunks(D, 4, {"b"}) == [0, 1, 3]
    candidacies = await store.candidacies(D, ["a", "b", "ghost"])
    assert sorted(candidacies) == ["a", "b"]
    assert (candidacies["a"].leases_on_blob, candidacies["a"].leases) == (1, 1)
    assert candidacies["b"].complete == mask_of([0])
    await live_replica(store, "r1")
    await store.blobs.add_watch(D, "c", "r1:1")
    await store.blobs.add_watch(D, "ghost", "r1:2")
    context = await store.fill_context(D, exclude="")
    assert context is not None and (context.chunk_count, context.cold) == (4, [1, 3])
    assert (context.fetching_blob, context.fetching) == (1, 1)
    assert sorted(context.candidacies) == ["c"], "watchers that are members"
    assert await store.fill_context(E, exclude="") is None
    # b misses its heartbeats: it is no source and nobody's peer.
    await store.members.silence(101)
    silent = await store.chunk_states(D, [0], "c", "", 5, False)
    assert (silent[0].sources, silent[0].peers, silent[0].metainfo) == (0, [], None)


async def test_the_fanout_context_reads_members_requesters_and_holdings(store: Store) -> None:
    for node_id in "abcd":
        await member(store, node_id, zone="z" + node_id)
    for node_id, at in (("c", 1.0), ("b", 2.0), ("ghost", 3.0)):
        await store.blobs.request(D, 100, 4, node_id, at, 10)
    await store.blobs.set_fanout(D, 1, {"a": 5.0, "d": 6.0})
    await store.peers.hold("b", D, mask_of([1]), mask_of([2]))
    await store.members.heartbeat("a", 200.0, Load())
    await store.members.silence(150.0)  # all but a
    context = await store.fanout_context(D, [1, 2])
    assert context.members == {1: {"a": 5.0, "d": 6.0}, 2: {}}
    assert context.requesters == ["c", "b", "ghost"]
    assert context.zones == {"a": "za"}, "the members that are not silent"
    assert context.masks["b"] == (mask_of([1]), mask_of([2])) and context.masks["c"] == (0, 0)


# ---- announcements (one step each) ----


def claim(digest: str, complete: list[int], partial: Sequence[int] = ()) -> Claim:
    return Claim(digest, 100, 4, mask_of(complete), mask_of(partial))


async def test_an_announcement_changes_nothing_for_a_stranger_or_past_the_bound(
    store: Store,
) -> None:
    assert not (await store.announce("a", [claim(D, [0])], 1.0, 2)).member
    await member(store, "a")
    await store.announce("a", [claim(D, [0])], 1.0, 2, max_blobs=2)
    past = await store.announce("a", [claim(D, [1]), claim(E, [0])], 1.0, 2, max_blobs=2)
    assert past.member and not past.fit, "each claim counts as a new blob"
    assert await store.peers.holdings("a") == {D: (mask_of([0]), 0)}
    assert await store.blobs.shape(E) is None


async def test_an_announcement_leaves_out_a_blob_known_with_another_shape(store: Store) -> None:
    await member(store, "a")
    await store.blobs.ensure(E, 200, 4)
    announced = await store.announce("a", [claim(E, [0]), claim(D, [0, 1], [2])], 1.0, 2)
    assert announced.conflicts == {E: (200, 4)}
    assert await store.peers.holdings("a") == {D: (mask_of([0, 1]), mask_of([2]))}
    assert await store.blobs.shape(D) == (100, 4)
    [gain] = announced.gains
    assert (gain.digest, gain.chunks, gain.counts) == (D, (0, 1), (1, 1))


async def test_an_announcement_ends_the_leases_on_the_chunks_it_brings(store: Store) -> None:
    for node_id in "ab":
        await member(store, node_id)
    assert await store.leases.grant("a", D, [0, 1], 1.0, CAPS) == [0, 1]
    [gain] = (await store.announce("b", [claim(D, [1, 2])], 2.0, 2)).gains
    assert [(lease.holder, lease.chunk) for lease in gain.released] == [("a", 1)]
    assert await store.leases.get(D, 0) is not None and await store.leases.get(D, 1) is None
    assert await store.leases.fetching() == 1


async def test_a_chunks_first_holder_gets_fanout_members_and_its_second_takes_them(
    store: Store,
) -> None:
    """The first whole holder of a chunk: `fanout` of the requesters that lack it, neither
    silent nor gone, rotating by chunk. The second: the fan-out ends, and where it had one
    member (a relay from a seed), that member is named, whichever requester brought the second
    copy: its window is free."""
    for node_id in ("src", "w1", "w2", "w3", "has", "quiet"):
        await member(store, node_id)
    for at, node_id in enumerate(("w1", "has", "ghost", "w2", "quiet", "w3", "src")):
        await store.blobs.request(D, 100, 4, node_id, float(at), 10)
    await store.peers.hold("has", D, mask_of([1]), 0)
    for node_id in ("src", "w1", "w2", "w3", "has"):
        await store.members.heartbeat(node_id, 200.0, Load())
    await store.members.silence(150.0)  # quiet
    [gain] = (await store.announce("src", [claim(D, [0, 1, 3])], 7.0, 2)).gains
    assert (gain.chunks, gain.counts, gain.relayed) == ((0, 1, 3), (1, 2, 1), ())
    # Waiting for chunks 0 and 3: w1, has, w2, w3; 0 starts at 0 * 2 % 4, 3 at 3 * 2 % 4.
    assert await store.blobs.fanout(D, 0) == {"w1": 7.0, "has": 7.0}
    assert await store.blobs.fanout(D, 3) == {"w2": 7.0, "w3": 7.0}
    await store.blobs.set_fanout(D, 2, {"w3": 8.0})
    await store.announce("has", [claim(D, [2])], 9.0, 2)
    # Waiting for chunk 2: w1, w2, w3, src (it lacks 2); 2 starts at 2 * 2 % 4.
    assert await store.blobs.fanout(D, 2) == {"w1": 9.0, "w2": 9.0}, "the old members go"
    [gain] = (await store.announce("w1", [claim(D, [0])], 10.0, 2)).gains
    assert (gain.counts, gain.relayed) == ((2,), ())
    assert await store.blobs.fanout(D, 0) == {}
    await store.blobs.set_fanout(D, 3, {"w2": 11.0})
    [gain] = (await store.announce("w3", [claim(D, [3])], 12.0, 2)).gains  # before w2
    assert gain.relayed == ((3, "w2"),) and await store.blobs.fanout(D, 3) == {}


async def test_a_node_that_holds_the_whole_blob_is_no_longer_its_requester(store: Store) -> None:
    await member(store, "a")
    await store.blobs.request(D, 100, 4, "a", 1.0, 10)
    await store.announce("a", [claim(D, [0, 1], [2, 3])], 2.0, 2)
    assert await store.blobs.requesters(D) == ["a"]
    await store.announce("a", [claim(D, [2, 3])], 3.0, 2)
    assert await store.blobs.requesters(D) == [] and await store.blobs.asked("a") == []


async def test_one_replica_sweeps_at_a_time(store: Store) -> None:
    await store.replicas.beat(Replica("r1", "host1:7070", 1.0, 0.0), 30)
    assert [r.address for r in await store.replicas.live()] == ["host1:7070"]
    assert await store.replicas.sweeper("r1", 30)
    assert await store.replicas.sweeper("r1", 30)
    if store.shared:
        assert not await store.replicas.sweeper("r2", 30)


async def test_notifications_reach_the_hub(store: Store, hub: Hub) -> None:
    watcher = hub.add_watcher("a", 1, D, 4, "r:1")
    inbox = hub.open_inbox("b", 1)
    await store.notify([Changed(D, (1, 3)), Orders("b"), Gone("a", 1)])
    await eventually(lambda: watcher.closed)
    assert watcher._dirty == {1, 3}
    await asyncio.wait_for(inbox.wait(), 5)
