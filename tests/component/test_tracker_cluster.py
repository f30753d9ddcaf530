"""The tracker's rules on its state alone (no gRPC), with a clock the tests move by hand, with
each store: in memory, and in a real redis-server."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from tests.support.stores import STORES, fresh_store, live_replica
from tracker.cluster import ChunkView, Cluster, Directive, Holding, Load, Policy
from tracker.errors import (
    FailedPrecondition,
    InvalidArgument,
    MetainfoConflict,
    NodeUnknown,
    NoTargets,
    TaskUnknown,
)
from tracker.hub import Watcher
from tracker.peerstore import mask_of
from tracker.placement import (
    CHECK_GRACE,
    DIRECT_BLOB,
    MAX_CHECKS_PER_REQUESTER,
    SEED_WINDOW,
    TICK_SECONDS,
)
from tracker.tasks import CheckOrder, Order, PreheatOrder, RepublishOrder, TaskState

D = "sha256:" + "d" * 64
E = "sha256:" + "e" * 64
SIZE, CHUNKS = 40 << 20, 4  # a 40 MiB blob in four chunks


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=STORES)
async def cluster(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Cluster]:
    policy = Policy(
        heartbeat_interval=1, node_ttl=3, lease_ttl=2, max_peers=5, blob_leases=8, upstream_leases=8
    )
    rng = random.Random(3)
    store = await fresh_store(request, request.param, policy.lease_ttl, rng)
    cluster = Cluster(policy, clock=clock, rng=rng, store=store)
    await live_replica(store, cluster.instance)
    await cluster.start()
    yield cluster
    await cluster.close()


async def join(cluster: Cluster, node_id: str, zone: str = "", instance: str = "i1") -> None:
    await cluster.join(node_id, f"{node_id}:8080", f"{node_id}:6881", zone, instance)


async def hold(cluster: Cluster, node_id: str, digest: str = D, *chunks: int) -> None:
    complete = chunks or tuple(range(CHUNKS))
    await cluster.announce(node_id, [Holding(digest, SIZE, CHUNKS, complete)], [])


async def locate(
    cluster: Cluster, node_id: str, max_leases: int = 0, digest: str = D
) -> list[ChunkView]:
    return await cluster.locate(node_id, digest, SIZE, CHUNKS, max_leases=max_leases)


async def members(cluster: Cluster) -> set[str]:
    return {node.id for node in await cluster.store.members.all()}


async def holder(cluster: Cluster, digest: str, chunk: int) -> str | None:
    lease = await cluster.store.leases.get(digest, chunk)
    return None if lease is None else lease.holder


async def orders(cluster: Cluster, node_id: str) -> list[Order]:
    """Take the orders queued for the node's Tasks stream."""
    taken = []
    while (order := await cluster.store.tasks.pop(node_id)) is not None:
        taken.append(order)
    return taken


async def checks(cluster: Cluster, node_id: str) -> list[CheckOrder]:
    """The check orders among those queued for the node."""
    return [order for order in await orders(cluster, node_id) if isinstance(order, CheckOrder)]


async def marked(watcher: Watcher, *chunks: int) -> bool:
    """Whether the watcher hears of a change of any of the chunks (through Redis: a moment
    later)."""
    for _ in range(100):
        if watcher._dirty.intersection(chunks):
            return True
        await asyncio.sleep(0.02)
    return False


def directives(views: list[ChunkView]) -> list[Directive]:
    return [v.directive for v in views]


def peer_ids(view: ChunkView) -> set[str]:
    return {p.node_id for p in view.peers}


# ---- membership ----


async def test_a_silent_node_is_forgotten_after_its_ttl(cluster: Cluster, clock: Clock) -> None:
    await join(cluster, "a")
    await join(cluster, "b")
    await hold(cluster, "a")
    for _ in range(5):
        clock.advance(1)
        await cluster.heartbeat("b", Load(uploads=1))
        await cluster.sweep()
    assert await members(cluster) == {"b"}
    with pytest.raises(NodeUnknown):
        await cluster.heartbeat("a", Load())
    assert all(v.directive is Directive.WAIT for v in await locate(cluster, "b"))


async def test_unknown_nodes_are_told_to_join(cluster: Cluster) -> None:
    with pytest.raises(NodeUnknown):
        await cluster.heartbeat("ghost", Load())
    with pytest.raises(NodeUnknown):
        await locate(cluster, "ghost")
    with pytest.raises(NodeUnknown):
        await hold(cluster, "ghost")


async def test_joining_again_replaces_the_inventory(cluster: Cluster) -> None:
    await join(cluster, "a")
    await hold(cluster, "a")
    await join(cluster, "a")
    assert await cluster.store.peers.holdings("a") == {}


async def test_everything_is_forgotten_once_nodes_leave(cluster: Cluster) -> None:
    await join(cluster, "a")
    await join(cluster, "b")
    await hold(cluster, "a")
    await locate(cluster, "b", max_leases=2, digest=E)
    await cluster.leave("a")
    await cluster.leave("b")
    assert await cluster.store.blobs.count() == 0
    assert await cluster.store.leases.total() == 0 and await members(cluster) == set()


# ---- leases ----


async def test_cold_chunks_are_leased_to_one_requester_each(cluster: Cluster) -> None:
    await join(cluster, "a")
    await join(cluster, "b")
    first = await locate(cluster, "a", max_leases=2)
    assert directives(first) == [Directive.FETCH] * 2 + [Directive.WAIT] * 2
    second = await locate(cluster, "b", max_leases=4)
    assert directives(second) == [Directive.WAIT] * 2 + [Directive.FETCH] * 2
    assert [v.lease_holder for v in second] == ["a", "a", "b", "b"]
    assert all(v.lease_seconds > 0 for v in second)


async def test_the_lease_budget_is_capped_by_the_tracker(cluster: Cluster) -> None:
    cluster.policy.max_leases = 1
    await join(cluster, "a")
    assert directives(await locate(cluster, "a", max_leases=4)).count(Directive.FETCH) == 1
    assert directives(await locate(cluster, "a", max_leases=4)).count(Directive.FETCH) == 1


async def test_few_chunks_of_a_blob_are_leased_at_once_cluster_wide(cluster: Cluster) -> None:
    cluster.policy.blob_leases = 3
    for node_id in "abc":
        await join(cluster, node_id)
    assert directives(await locate(cluster, "a", max_leases=2)).count(Directive.FETCH) == 2
    assert directives(await locate(cluster, "b", max_leases=2)).count(Directive.FETCH) == 1
    assert directives(await locate(cluster, "c", max_leases=2)).count(Directive.FETCH) == 0
    await cluster.publish("a", D, SIZE, CHUNKS, 0, b"meta0")  # chunk 0 done: its lease frees up
    assert [
        v.index for v in await locate(cluster, "c", max_leases=2) if v.directive is Directive.FETCH
    ] == [3]


async def test_freed_upstream_slots_go_to_the_longest_watched_blob_in_chunk_order(
    cluster: Cluster,
) -> None:
    cluster.policy.upstream_leases = 2
    for node_id in "ab":
        await join(cluster, node_id)
    assert (
        directives(await locate(cluster, "a", max_leases=2))
        == [Directive.FETCH] * 2 + [Directive.WAIT] * 2
    )
    await cluster.watch("b", D, SIZE, CHUNKS)  # D is the longest watched blob
    watchers = {node_id: await cluster.watch(node_id, E, SIZE, CHUNKS) for node_id in "ab"}
    # The cluster's two slots are taken: the younger blob gets none, nobody polls for one.
    assert directives(await locate(cluster, "b", max_leases=2, digest=E)) == [Directive.WAIT] * 4
    # Chunk 0 is in and being published: its slot goes to the older blob's next chunk, 2, and
    # to b, the watcher fetching least; the lease on 0 lasts until it is published.
    assert await cluster.renew("a", D, 0, 1000, fetched=True) is not None
    assert (await holder(cluster, D, 2), await holder(cluster, D, 0)) == ("b", "a")
    await cluster.publish("a", D, SIZE, CHUNKS, 1, b"meta1")  # 1 is done: 3 is next, then E
    assert await holder(cluster, D, 3) is not None and await holder(cluster, E, 0) is None
    await cluster.publish("a", D, SIZE, CHUNKS, 0, b"meta0")
    await cluster.publish("b", D, SIZE, CHUNKS, 2, b"meta2")
    assert await holder(cluster, E, 0) is not None  # D has no cold chunk left unleased
    assert all([await marked(watcher, 0) for watcher in watchers.values()])


async def test_a_blob_of_one_chunk_gets_the_next_free_slot(cluster: Cluster) -> None:
    """An image's config (one small chunk) is not kept waiting behind its layers: it holds a
    slot for a moment, and clients often want it before the layers are of use."""
    cluster.policy.upstream_leases = 1
    config = "sha256:" + "c" * 64
    for node_id in "ab":
        await join(cluster, node_id)
    assert (
        directives(await locate(cluster, "a", max_leases=1))
        == [Directive.FETCH] + [Directive.WAIT] * 3
    )
    await cluster.watch("b", D, SIZE, CHUNKS)
    await cluster.watch("b", E, SIZE, CHUNKS)
    await cluster.watch("b", config, 501, 1)
    assert await cluster.renew("a", D, 0, 1000, fetched=True) is not None
    assert await holder(cluster, config, 0) == "b"
    assert await holder(cluster, D, 1) is None


@pytest.fixture
async def abc(cluster: Cluster) -> Cluster:
    """Nodes a, b and c; one missing heartbeats for 1.5 s is silent."""
    cluster.policy.silent_after = 1.5
    for node_id in "abc":
        await join(cluster, node_id)
    return cluster


async def test_a_lapsed_lease_goes_to_a_watcher_that_still_heartbeats(
    abc: Cluster, clock: Clock
) -> None:
    cluster = abc
    await cluster.locate("a", D, SIZE, CHUNKS, chunks=[1], max_leases=1)
    for node_id in "bc":
        await cluster.watch(node_id, D, SIZE, CHUNKS)
    # c died: it holds no lease, so it looks the least busy, and chunk 1 would rotate to it.
    for _ in range(2):
        clock.advance(1.0)
        for node_id in "ab":
            await cluster.heartbeat(node_id, Load())
    await cluster.sweep()
    assert await holder(cluster, D, 1) == "b"


async def test_a_lease_is_kept_while_the_fetch_progresses(cluster: Cluster, clock: Clock) -> None:
    await join(cluster, "a")
    await join(cluster, "b")
    await locate(cluster, "a", max_leases=1)
    for progress in range(1, 10):
        clock.advance(1)
        for node_id in "ab":
            await cluster.heartbeat(node_id, Load())
        assert await cluster.renew("a", D, 0, progress * 1000) is not None
        await cluster.sweep()
    assert (await locate(cluster, "b", max_leases=4))[0].lease_holder == "a"


async def test_a_stalled_lease_moves_to_a_watcher(cluster: Cluster, clock: Clock) -> None:
    await join(cluster, "a")
    await join(cluster, "b")
    await locate(cluster, "a", max_leases=1)
    watcher = await cluster.watch("b", D, SIZE, CHUNKS)
    await cluster.renew("a", D, 0, 500)
    clock.advance(1.5)
    assert await cluster.renew("a", D, 0, 500) is not None  # alive, but no progress
    clock.advance(1.0)
    await cluster.sweep()
    assert await cluster.renew("a", D, 0, 600) is None
    assert await holder(cluster, D, 0) == "b"
    assert await marked(watcher, 0)
    assert (await cluster.view("b", D, SIZE, CHUNKS, [0]))[0].directive is Directive.FETCH


async def test_a_call_lapses_a_lease_that_ran_out_once_a_tick_has_passed(
    cluster: Cluster, clock: Clock
) -> None:
    """Calls check the leases' deadlines at most every TICK_SECONDS (each check is a round
    trip to the store); the sweeper checks them every time."""
    await join(cluster, "a")
    await join(cluster, "b")
    await locate(cluster, "a", max_leases=1)
    clock.advance(cluster.policy.lease_ttl - TICK_SECONDS / 2)
    await locate(cluster, "b")  # checks: nothing ran out yet
    clock.advance(TICK_SECONDS * 0.8)  # a's lease ran out, within a tick of the last check
    assert await holder(cluster, D, 0) == "a"
    await locate(cluster, "b")
    assert await holder(cluster, D, 0) == "a"
    clock.advance(TICK_SECONDS)
    await locate(cluster, "b")
    assert await holder(cluster, D, 0) is None


async def test_the_sweeper_lapses_a_lease_that_ran_out_at_once(
    cluster: Cluster, clock: Clock
) -> None:
    await join(cluster, "a")
    await locate(cluster, "a", max_leases=1)
    clock.advance(cluster.policy.lease_ttl + 0.01)
    await cluster.sweep()
    assert await holder(cluster, D, 0) is None


async def test_a_leaving_holder_hands_its_lease_on_at_once(cluster: Cluster) -> None:
    await join(cluster, "a")
    await join(cluster, "b")
    await locate(cluster, "a", max_leases=2)
    await cluster.watch("b", D, SIZE, CHUNKS)
    await cluster.leave("a")
    assert {await holder(cluster, D, c) for c in (0, 1)} == {"b"}


async def test_a_released_lease_goes_to_another_requester(cluster: Cluster) -> None:
    await join(cluster, "a")
    await join(cluster, "b")
    await locate(cluster, "a", max_leases=1)
    await cluster.watch("a", D, SIZE, CHUNKS)
    await cluster.watch("b", D, SIZE, CHUNKS)
    await cluster.release("a", D, 0)
    assert await holder(cluster, D, 0) == "b"


async def test_a_restarted_node_loses_its_leases_but_a_rejoin_keeps_them(cluster: Cluster) -> None:
    await join(cluster, "a", instance="one")
    await locate(cluster, "a", max_leases=2)
    await join(cluster, "a", instance="one")
    assert len(await cluster.store.leases.held_by("a")) == 2
    await join(cluster, "a", instance="two")
    assert await cluster.store.leases.held_by("a") == []


async def test_leases_stay_exclusive_under_random_operations(
    cluster: Cluster, clock: Clock
) -> None:
    cluster.policy.max_peers, cluster.policy.blob_leases, cluster.policy.upstream_leases = 20, 3, 3
    rng = random.Random(11)
    names = [f"n{i}" for i in range(8)]
    # Each step is a few round trips to Redis: fewer steps there.
    for step in range(600 if cluster.store.shared else 3000):
        node_id = rng.choice(names)
        action = rng.random()
        if node_id not in await members(cluster):
            await join(cluster, node_id)
        elif action < 0.4:
            views = await locate(cluster, node_id, max_leases=rng.randint(0, 4))
            for view in views:
                lease = await cluster.store.leases.get(D, view.index)
                assert (view.directive is Directive.FETCH) == (
                    lease is not None and lease.holder == node_id
                )
        elif action < 0.6:
            await cluster.renew(node_id, D, rng.randrange(CHUNKS), step)
        elif action < 0.7:
            chunk = rng.randrange(CHUNKS)
            await cluster.publish(node_id, D, SIZE, CHUNKS, chunk, b"meta%d" % chunk)
        elif action < 0.75:
            await cluster.leave(node_id)
        elif action < 0.8:
            await cluster.withdraw(node_id, [D], [])
        elif action < 0.85:
            await cluster.watch(node_id, D, SIZE, CHUNKS)
        else:
            clock.advance(rng.random())
            await cluster.heartbeat(node_id, Load())
            await cluster.sweep()
        await check_lease_invariants(cluster)


async def check_lease_invariants(cluster: Cluster) -> None:
    store = cluster.store
    nodes = await members(cluster)
    by_holder = {
        (lease.digest, lease.chunk): lease.holder
        for node_id in nodes
        for lease in await store.leases.held_by(node_id)
    }
    leases = await store.leases.all()
    for lease in leases:
        assert lease.holder in nodes, "a lease held by a node that is gone"
        assert by_holder[(lease.digest, lease.chunk)] == lease.holder
        # Warm: held whole by a member that is not silent (silent ones may be dead).
        (state,) = await store.chunk_states(lease.digest, [lease.chunk], "", "", 0, False)
        assert state.sources == 0, "a lease on a warm chunk"
        assert await store.leases.count(lease.holder, lease.digest) <= cluster.policy.max_leases
    assert len(by_holder) == len(leases)


# ---- sources, metainfo and fan-out ----


async def test_publishing_ends_the_lease_and_the_others_swarm(cluster: Cluster) -> None:
    await join(cluster, "a")
    await join(cluster, "b")
    await locate(cluster, "a", max_leases=1)
    await cluster.publish("a", D, SIZE, CHUNKS, 0, b"meta0")
    assert await holder(cluster, D, 0) is None
    view = (await locate(cluster, "b"))[0]
    assert view.directive is Directive.SWARM
    assert view.metainfo == b"meta0"
    assert [(p.node_id, p.complete) for p in view.peers] == [("a", True)]
    assert (await locate(cluster, "b"))[0].metainfo == b"meta0"
    assert (await cluster.locate("b", D, SIZE, CHUNKS, with_metainfo=False))[0].metainfo is None


async def test_a_chunk_cannot_be_published_with_other_metainfo(cluster: Cluster) -> None:
    await join(cluster, "a")
    await join(cluster, "b")
    await cluster.publish("a", D, SIZE, CHUNKS, 0, b"meta0")
    await cluster.publish("b", D, SIZE, CHUNKS, 0, b"meta0")
    with pytest.raises(MetainfoConflict):
        await cluster.publish("b", D, SIZE, CHUNKS, 0, b"other")


async def test_a_single_source_is_handed_to_two_requesters_only(cluster: Cluster) -> None:
    """The others are given those two, which relay the chunk, and each other, to trade the
    pieces they got: not the source."""
    await join(cluster, "src")
    requesters = [f"r{i}" for i in range(6)]
    for r in requesters:
        await join(cluster, r)
        await locate(cluster, r)
    await hold(cluster, "src", D, 0, 1, 2, 3)
    relays_by_chunk = []
    for chunk in range(CHUNKS):
        given_source = {
            r for r in requesters if "src" in peer_ids((await locate(cluster, r))[chunk])
        }
        assert len(given_source) == 2
        for r in set(requesters) - given_source:
            view = (await locate(cluster, r))[chunk]
            assert peer_ids(view) == set(requesters) - {r}
            assert all(not p.complete for p in view.peers)
            assert {p.node_id for p in view.peers[:2]} == given_source  # the relays first
        relays_by_chunk.append(frozenset(given_source))
    assert len(set(relays_by_chunk)) > 1, "the same two requesters relay every chunk"


async def test_a_handout_names_at_most_max_peers_however_many_wait(cluster: Cluster) -> None:
    """Among many requesters, one that does not relay the chunk is given its relays and enough
    of the others to fill the handout, and different requesters are given different others."""
    cluster.policy.max_peers = 5
    await join(cluster, "src")
    requesters = [f"r{i:02}" for i in range(30)]
    for r in requesters:
        await join(cluster, r)
        await locate(cluster, r)
    await hold(cluster, "src", D, 0)
    given_source = {r for r in requesters if "src" in peer_ids((await locate(cluster, r))[0])}
    others: set[str] = set()
    for r in set(requesters) - given_source:
        view = (await locate(cluster, r))[0]
        assert len(view.peers) == 5
        assert {p.node_id for p in view.peers[:2]} == given_source
        assert r not in peer_ids(view) and "src" not in peer_ids(view)
        others |= peer_ids(view) - given_source
    assert len(others) > 10, others


W, WIDE = "sha256:" + "f" * 64, 16  # a blob of 16 chunks: more than one requester relays at once


async def seed_and_request(cluster: Cluster, requesters: list[str]) -> dict[str, list[ChunkView]]:
    """A seed holds all of W before anyone asks (a warm rollout); then each requester asks."""
    await join(cluster, "seed")
    await cluster.announce("seed", [Holding(W, SIZE, WIDE, tuple(range(WIDE)))], [])
    views = {}
    for r in requesters:
        await join(cluster, r)
        views[r] = await cluster.locate(r, W, SIZE, WIDE)
    return views


async def test_a_seed_sends_each_chunk_to_one_relay_and_the_requesters_take_turns(
    cluster: Cluster,
) -> None:
    """The seed's egress bounds a warm rollout: it sends each chunk once, to one requester that
    relays it, and no requester relays more than SEED_WINDOW chunks at once, however early it
    asked; the chunks nobody relays yet wait for a relay."""
    requesters = [f"r{i}" for i in range(6)]
    views = await seed_and_request(cluster, requesters)
    relays: dict[int, list[str]] = {}
    for r, chunk_views in views.items():
        for view in chunk_views:
            if "seed" in peer_ids(view):
                relays.setdefault(view.index, []).append(r)
    assert all(len(given) == 1 for given in relays.values()), relays
    per_requester = [sum(r in given for given in relays.values()) for r in requesters]
    assert max(per_requester) == SEED_WINDOW
    assert len(relays) == len(requesters) * SEED_WINDOW < WIDE
    for r in requesters:  # what each is shown now that everyone asked
        for view in await cluster.locate(r, W, SIZE, WIDE):
            if view.index not in relays:
                assert view.directive is Directive.WAIT, (r, view.index)
            elif "seed" not in peer_ids(view):
                assert view.directive is Directive.SWARM
                assert view.peers[0].node_id == relays[view.index][0], (r, view.index)
                # and the other requesters, to trade the pieces the relay sent them
                assert peer_ids(view) == set(requesters) - {r}, (r, view.index)


async def test_a_relay_that_got_its_chunk_relays_the_next_one(cluster: Cluster) -> None:
    views = await seed_and_request(cluster, ["r0", "r1"])
    waiting = [v.index for v in views["r1"] if v.directive is Directive.WAIT]
    (relayed,) = [v.index for v in views["r0"] if "seed" in peer_ids(v)]
    watcher = await cluster.watch("r1", W, SIZE, WIDE)
    await cluster.announce("r0", [Holding(W, SIZE, WIDE, (relayed,))], [])
    assert await marked(watcher, *waiting)
    after = await cluster.locate("r0", W, SIZE, WIDE)
    taken = [v.index for v in after if "seed" in peer_ids(v) and v.index in waiting]
    assert len(taken) == SEED_WINDOW
    for v in await cluster.locate("r1", W, SIZE, WIDE):
        if v.index == taken[0]:
            assert peer_ids(v) >= {"r0"} and "seed" not in peer_ids(v)


async def test_a_relay_whose_chunk_another_requester_held_first_relays_the_next_one(
    cluster: Cluster,
) -> None:
    """The requesters of a relayed chunk trade its pieces, so another may hold it whole before
    its relay does. The relay's window is free then all the same: it relays the next chunk at
    once. It was given none, and the chunks after it waited for a relay until the requesters'
    stall timeouts asked again (7.6 s of a 4-node pull doing nothing)."""
    views = await seed_and_request(cluster, ["r0", "r1"])
    waiting = [v.index for v in views["r0"] if v.directive is Directive.WAIT]
    (relayed,) = [v.index for v in views["r0"] if "seed" in peer_ids(v)]
    watcher = await cluster.watch("r0", W, SIZE, WIDE)
    await cluster.announce("r1", [Holding(W, SIZE, WIDE, (relayed,))], [])  # before r0
    assert await marked(watcher, *waiting)  # r0 waits on those: it is told to look again
    after = await cluster.locate("r0", W, SIZE, WIDE)
    taken = [v.index for v in after if "seed" in peer_ids(v) and v.index in waiting]
    assert len(taken) == SEED_WINDOW


V, Y = "sha256:" + "5" * 64, "sha256:" + "6" * 64  # more blobs of a seeded image: 16 and 2 chunks


async def seed(cluster: Cluster, *blobs: tuple[str, int]) -> None:
    await join(cluster, "seed")
    holdings = [Holding(digest, SIZE, count, tuple(range(count))) for digest, count in blobs]
    await cluster.announce("seed", holdings, [])


def relayed(views: list[ChunkView]) -> list[int]:
    """The chunks these views tell the node to get from the seed: those it relays."""
    return [v.index for v in views if "seed" in peer_ids(v)]


async def test_a_requester_relays_one_window_over_all_the_blobs_it_pulls(cluster: Cluster) -> None:
    """A node's upload is shared by all it relays: a requester of several blobs of a seeded
    image relays SEED_WINDOW chunks in all, so the others relay the rest, not the first node
    to ask about every blob."""
    await seed(cluster, (W, WIDE), (V, WIDE))
    for r in ("r0", "r1"):
        await join(cluster, r)
    assert len(relayed(await cluster.locate("r0", W, SIZE, WIDE))) == SEED_WINDOW
    on_v = await cluster.locate("r0", V, SIZE, WIDE)
    assert relayed(on_v) == [] and {v.directive for v in on_v} == {Directive.WAIT}
    assert len(relayed(await cluster.locate("r1", V, SIZE, WIDE))) == SEED_WINDOW


async def test_a_relaying_never_started_stops_holding_the_window_after_the_lease_ttl(
    cluster: Cluster, clock: Clock
) -> None:
    """A requester made the relay of a chunk that it then never swarms (its client went away,
    it crashed before a word) is not kept from relaying forever: past the lease TTL without
    holding any of that chunk, the relaying stops counting against its window, as it already
    stops counting as the chunk's relay for the others."""
    await seed(cluster, (W, WIDE), (V, WIDE))
    await join(cluster, "r0")
    assert len(relayed(await cluster.locate("r0", W, SIZE, WIDE))) == SEED_WINDOW
    clock.advance(cluster.policy.lease_ttl / 2)
    for node_id in ("seed", "r0"):
        await cluster.heartbeat(node_id, Load())
    assert relayed(await cluster.locate("r0", V, SIZE, WIDE)) == []  # its window is still full
    clock.advance(cluster.policy.lease_ttl / 2 + 0.1)
    for node_id in ("seed", "r0"):
        await cluster.heartbeat(node_id, Load())
    assert len(relayed(await cluster.locate("r0", V, SIZE, WIDE))) == SEED_WINDOW


async def test_a_relay_that_gave_up_its_blob_relays_another_at_once(cluster: Cluster) -> None:
    """A requester whose pull of one blob failed (its disk filled up with the chunk it relayed)
    withdraws it: its window is free at once, not after the lease TTL, and it relays a chunk
    of another blob it pulls; the chunk it gave up gets another relay, also at once."""
    await seed(cluster, (W, WIDE), (V, WIDE))
    for r in ("r0", "r1"):
        await join(cluster, r)
    (given_up,) = relayed(await cluster.locate("r0", W, SIZE, WIDE))
    await cluster.announce("r0", [Holding(W, SIZE, WIDE, (), (given_up,))], [])
    assert relayed(await cluster.locate("r0", V, SIZE, WIDE)) == []  # its window is full
    assert relayed(await cluster.locate("r1", V, SIZE, WIDE)) != []
    watcher = await cluster.watch("r0", V, SIZE, WIDE)
    await cluster.withdraw("r0", [W], [])
    assert await marked(watcher, *range(WIDE))
    assert len(relayed(await cluster.locate("r0", V, SIZE, WIDE))) == SEED_WINDOW
    assert "r0" not in await cluster.store.blobs.requesters(W)
    # r1 relays a chunk of V; of W, it is now the relay of the one r0 gave up, or waits for it.
    views = await cluster.locate("r1", W, SIZE, WIDE)
    assert "r0" not in set().union(*(peer_ids(v) for v in views))


async def test_a_relay_swarming_its_chunk_keeps_its_window_past_the_lease_ttl(
    cluster: Cluster, clock: Clock
) -> None:
    await seed(cluster, (W, WIDE), (V, WIDE))
    await join(cluster, "r0")
    (chunk,) = relayed(await cluster.locate("r0", W, SIZE, WIDE))
    await cluster.announce("r0", [Holding(W, SIZE, WIDE, (), (chunk,))], [])
    clock.advance(cluster.policy.lease_ttl + 0.1)
    for node_id in ("seed", "r0"):
        await cluster.heartbeat(node_id, Load())
    assert relayed(await cluster.locate("r0", V, SIZE, WIDE)) == []


CONFIG, CONFIG_SIZE = "sha256:" + "c" * 64, 501  # an image's config: one small chunk


async def test_a_config_goes_from_its_seed_to_every_requester_without_a_relay(
    cluster: Cluster,
) -> None:
    """Relayed, a config waited for a requester with a free relay window, behind the big
    blobs' chunks; it is small enough for the seed to send to everyone."""
    assert CONFIG_SIZE <= DIRECT_BLOB
    await join(cluster, "seed")
    holdings = [Holding(W, SIZE, WIDE, tuple(range(WIDE))), Holding(CONFIG, CONFIG_SIZE, 1, (0,))]
    await cluster.announce("seed", holdings, [])
    requesters = [f"r{i}" for i in range(6)]
    for r in requesters:
        await join(cluster, r)
        assert len(relayed(await cluster.locate(r, W, SIZE, WIDE))) == SEED_WINDOW
    for r in requesters:
        (view,) = await cluster.locate(r, CONFIG, CONFIG_SIZE, 1)
        assert view.directive is Directive.SWARM and "seed" in peer_ids(view), r
    (view,) = await cluster.view("r0", CONFIG, CONFIG_SIZE, 1, [0])  # as its watch shows it
    assert "seed" in peer_ids(view)
    after = await cluster.locate("r0", W, SIZE, WIDE)  # a relay is never handed the config
    assert len(relayed(after)) == SEED_WINDOW


async def test_a_config_fetched_from_upstream_goes_from_its_fetcher_to_every_requester(
    cluster: Cluster,
) -> None:
    """A big chunk's first holder is handed to `fanout` requesters that relay it; a config's
    to everyone."""
    await join(cluster, "fetcher")
    await cluster.announce("fetcher", [Holding(CONFIG, CONFIG_SIZE, 1, (0,))], [])
    requesters = [f"r{i}" for i in range(6)]
    for r in requesters:
        await join(cluster, r)
        await cluster.locate(r, CONFIG, CONFIG_SIZE, 1)
    for r in requesters:
        (view,) = await cluster.locate(r, CONFIG, CONFIG_SIZE, 1)
        assert view.directive is Directive.SWARM and "fetcher" in peer_ids(view), r


async def test_a_relay_with_nothing_left_to_relay_in_its_blob_relays_another(
    cluster: Cluster,
) -> None:
    """A relay that got its chunk moves on to a chunk of another blob it pulls once its own
    blob has no chunk left without a relay: blobs waiting for relays are not left waiting."""
    await seed(cluster, (Y, 2), (W, WIDE))
    for r in ("r0", "r1"):
        await join(cluster, r)
    assert relayed(await cluster.locate("r0", Y, SIZE, 2)) == [0]
    assert relayed(await cluster.locate("r1", Y, SIZE, 2)) == [1]
    for r in ("r0", "r1"):
        assert relayed(await cluster.locate(r, W, SIZE, WIDE)) == []
    watcher = await cluster.watch("r1", W, SIZE, WIDE)
    await cluster.announce("r0", [Holding(Y, SIZE, 2, (0,))], [])
    assert await marked(watcher, 0)
    assert relayed(await cluster.locate("r0", W, SIZE, WIDE)) == [0]


async def test_a_seed_serves_only_relays_while_it_is_the_only_source_of_a_chunk(
    cluster: Cluster,
) -> None:
    """While some chunk of a blob has no source but its seed, the seed's upload bounds the
    rollout: requesters of a chunk a relay holds whole get it from the relay, not the seed;
    once every chunk has a second source, the seed is a source like any other."""
    await seed(cluster, (Y, 2))
    for r in ("r0", "r1", "r2"):
        await join(cluster, r)
    assert relayed(await cluster.locate("r0", Y, SIZE, 2)) == [0]
    assert relayed(await cluster.locate("r1", Y, SIZE, 2)) == [1]
    await cluster.announce("r0", [Holding(Y, SIZE, 2, (0,))], [])
    (first, _) = await cluster.locate("r2", Y, SIZE, 2)
    assert first.directive is Directive.SWARM and "r0" in peer_ids(first)
    assert "seed" not in peer_ids(first)
    await cluster.announce("r1", [Holding(Y, SIZE, 2, (1,))], [])
    (first, second) = await cluster.locate("r2", Y, SIZE, 2)
    assert {"seed", "r0"} <= peer_ids(first) and {"seed", "r1"} <= peer_ids(second)


async def test_fan_out_ends_once_a_second_node_holds_the_chunk(cluster: Cluster) -> None:
    await join(cluster, "src")
    for r in ("r0", "r1", "r2", "r3"):
        await join(cluster, r)
        await locate(cluster, r)
    await hold(cluster, "src", D, 0)
    relays = [
        r for r in ("r0", "r1", "r2", "r3") if "src" in peer_ids((await locate(cluster, r))[0])
    ]
    await hold(cluster, relays[0], D, 0)
    for r in ("r0", "r1", "r2", "r3"):
        if r != relays[0]:
            view = (await locate(cluster, r))[0]
            assert {p.node_id for p in view.peers if p.complete} == {"src", relays[0]}


async def test_a_relay_that_never_starts_is_replaced(cluster: Cluster, clock: Clock) -> None:
    await join(cluster, "src")
    for r in ("r0", "r1", "r2"):
        await join(cluster, r)
        await locate(cluster, r)
    await hold(cluster, "src", D, 0)
    relays = {r for r in ("r0", "r1", "r2") if "src" in peer_ids((await locate(cluster, r))[0])}
    (other,) = {"r0", "r1", "r2"} - relays
    clock.advance(cluster.policy.lease_ttl + 0.5)
    assert "src" in peer_ids((await locate(cluster, other))[0])


async def test_a_relay_that_goes_silent_is_replaced_at_once(abc: Cluster, clock: Clock) -> None:
    """A relay that died mid-chunk would leave the requesters it was to serve waiting on it until
    it expires; once silent, it is no relay."""
    cluster = abc
    for r in ("r0", "r1"):
        await join(cluster, r)
    for r in ("r0", "r1", "b", "c"):
        await locate(cluster, r)
    await hold(cluster, "a", D, 0)
    relays = {r for r in ("r0", "r1", "b", "c") if "a" in peer_ids((await locate(cluster, r))[0])}
    (dead, alive) = sorted(relays)
    await cluster.announce(dead, [Holding(D, SIZE, CHUNKS, (), (0,))], [])  # it had started
    others = {"r0", "r1", "b", "c"} - relays
    assert all(["a" not in peer_ids((await locate(cluster, r))[0]) for r in others])
    clock.advance(1.6)
    for node_id in ("a", alive, *others):
        await cluster.heartbeat(node_id, Load())
    await cluster.sweep()
    assert dead in await members(cluster) and dead in await cluster.store.members.silent()
    for r in others:
        assert "a" in peer_ids((await locate(cluster, r))[0]) or alive in peer_ids(
            (await locate(cluster, r))[0]
        )
        assert dead not in peer_ids((await locate(cluster, r))[0])


async def test_a_holder_is_asked_to_republish_missing_metainfo(cluster: Cluster) -> None:
    await join(cluster, "a")
    await join(cluster, "b")
    await hold(cluster, "a", D, 0, 1)
    await locate(cluster, "b")
    await locate(cluster, "b")  # asked once per lease_ttl, not on every locate
    (order,) = await orders(cluster, "a")
    assert isinstance(order, RepublishOrder)
    assert (order.digest, order.size, order.chunk_count, order.chunks) == (D, SIZE, CHUNKS, (0, 1))


async def test_the_holders_of_a_chunk_whose_pieces_failed_are_asked_to_check_it(
    cluster: Cluster, clock: Clock
) -> None:
    """A requester says pieces of chunk 1 failed their hash: each complete holder it may have
    got them from is asked to check its copy, once a lease TTL for the chunk however many
    requesters say so, and the requester's word alone changes nothing it is told."""
    for node_id in "abcd":
        await join(cluster, node_id)
    await hold(cluster, "a")
    await hold(cluster, "b", D, 1)
    await cluster.announce("c", [Holding(D, SIZE, CHUNKS, (), (1,))], [])  # c has pieces of it
    before = await locate(cluster, "d")
    failed = await cluster.locate("d", D, SIZE, CHUNKS, failed=[1])
    assert [(v.directive, peer_ids(v)) for v in failed] == [
        (v.directive, peer_ids(v)) for v in before
    ]
    asked = {node_id: await checks(cluster, node_id) for node_id in "abcd"}
    assert asked["c"] == asked["d"] == []
    for node_id in "ab":
        (order,) = asked[node_id]
        assert (order.digest, order.chunk_count, order.chunks) == (D, CHUNKS, (1,))
    await cluster.locate("c", D, SIZE, CHUNKS, failed=[1])
    assert await checks(cluster, "a") == []
    clock.advance(cluster.policy.lease_ttl)
    await cluster.locate("c", D, SIZE, CHUNKS, failed=[1, 0])
    (again,) = await checks(cluster, "a")
    assert again.chunks == (0, 1)
    with pytest.raises(InvalidArgument):
        await cluster.locate("c", D, SIZE, CHUNKS, failed=[CHUNKS])


async def test_a_chunk_whose_only_source_sends_bad_pieces_after_its_check_is_leased(
    cluster: Cluster, clock: Clock
) -> None:
    """The only source of chunk 0 was asked to check it and did not withdraw it (it lies, or
    cannot tell), and its pieces still fail: the requester that says so once the source had
    CHECK_GRACE is leased the chunk, as if it were cold, while the others swarm on; once the
    requester holds it, the chunk has two sources and no report leases it again."""
    for node_id in "abcd":
        await join(cluster, node_id)
    assert directives(await locate(cluster, "a", max_leases=1))[0] is Directive.FETCH
    await cluster.publish("a", D, SIZE, CHUNKS, 0, b"meta0")
    await cluster.locate("b", D, SIZE, CHUNKS, failed=[0])
    assert [o.chunks for o in await checks(cluster, "a")] == [(0,)]
    await cluster.locate("b", D, SIZE, CHUNKS, failed=[0])  # within the grace: nothing yet
    assert await holder(cluster, D, 0) is None
    grace = min(CHECK_GRACE, cluster.policy.lease_ttl / 2)
    clock.advance(grace)
    await cluster.locate("b", D, SIZE, CHUNKS, failed=[0])
    assert await holder(cluster, D, 0) == "b"
    (mine,) = [v for v in await locate(cluster, "b") if v.index == 0]
    (theirs,) = [v for v in await locate(cluster, "c") if v.index == 0]
    assert mine.directive is Directive.FETCH
    assert (theirs.directive, peer_ids(theirs)) == (Directive.SWARM, {"a"})
    await cluster.locate("c", D, SIZE, CHUNKS, failed=[0])  # leased already: nothing more
    assert await holder(cluster, D, 0) == "b"
    await cluster.publish("b", D, SIZE, CHUNKS, 0, b"meta0")
    assert await holder(cluster, D, 0) is None
    await cluster.locate("d", D, SIZE, CHUNKS, failed=[0])
    clock.advance(grace)
    await cluster.locate("d", D, SIZE, CHUNKS, failed=[0])
    assert await holder(cluster, D, 0) is None
    (view,) = [v for v in await locate(cluster, "d") if v.index == 0]
    assert (view.directive, {"a", "b"} <= peer_ids(view)) == (Directive.SWARM, True)


async def test_a_requester_has_a_bounded_number_of_chunks_checked(
    cluster: Cluster, clock: Clock
) -> None:
    """However many chunks a requester says failed, it costs holders the hashing of at most
    MAX_CHECKS_PER_REQUESTER of them a lease TTL."""
    count = 3 * MAX_CHECKS_PER_REQUESTER
    size = count * (10 << 20)
    await join(cluster, "a")
    await join(cluster, "b")
    await cluster.announce("a", [Holding(E, size, count, tuple(range(count)))], [])
    for _ in range(3):
        await cluster.locate("b", E, size, count, failed=range(count))
    asked = [c for order in await checks(cluster, "a") for c in order.chunks]
    assert sorted(asked) == list(range(MAX_CHECKS_PER_REQUESTER))
    clock.advance(cluster.policy.lease_ttl)
    await cluster.locate("b", E, size, count, failed=range(count))
    asked = [c for order in await checks(cluster, "a") for c in order.chunks]
    assert len(asked) == MAX_CHECKS_PER_REQUESTER


async def test_a_chunk_held_by_one_node_without_metainfo_is_leased_to_one_watcher(
    cluster: Cluster,
) -> None:
    """The only holder of a chunk published metainfo that waits for a second witness (after the
    tracker's state started afresh, it republished as asked): rather than each requester
    waiting for its stall timeout and then fetching the chunk upstream, one watcher is leased
    it, the others wait on that lease, and its metainfo is what they then swarm with."""
    for node_id in "abc":
        await join(cluster, node_id)
    await hold(cluster, "a")  # a held the blob before the restart; nothing is published
    watchers = {r: await cluster.watch(r, D, SIZE, CHUNKS) for r in "bc"}
    assert Directive.FETCH not in directives(await locate(cluster, "b", max_leases=2))
    await cluster.unconfirmed("a", D, 0)
    assert all([await marked(watcher, 0) for watcher in watchers.values()])
    fetcher = await holder(cluster, D, 0)
    assert fetcher in ("b", "c")
    other = "c" if fetcher == "b" else "b"
    (mine,) = [v for v in await locate(cluster, fetcher) if v.index == 0]
    (theirs,) = [v for v in await locate(cluster, other) if v.index == 0]
    assert mine.directive is Directive.FETCH
    assert (theirs.directive, theirs.lease_holder) == (Directive.WAIT, fetcher)
    await cluster.publish(fetcher, D, SIZE, CHUNKS, 0, b"meta0")
    (view,) = [v for v in await locate(cluster, other) if v.index == 0]
    assert (view.directive, view.metainfo) == (Directive.SWARM, b"meta0")
    assert fetcher in peer_ids(view)


async def test_a_chunk_two_nodes_hold_without_metainfo_is_not_leased(cluster: Cluster) -> None:
    """Their republished metainfo confirms itself: no upstream fetch is needed."""
    for node_id in "abc":
        await join(cluster, node_id)
    await hold(cluster, "a")
    await hold(cluster, "b")
    await cluster.watch("c", D, SIZE, CHUNKS)
    await cluster.unconfirmed("a", D, 0)
    assert await holder(cluster, D, 0) is None
    await cluster.unconfirmed("ghost", D, 0)  # not a member: no error, and nothing leased
    assert await holder(cluster, D, 0) is None
    assert {v.directive for v in await locate(cluster, "c", max_leases=2)} == {Directive.SWARM}


async def test_a_chunk_whose_last_holder_withdraws_is_leased_again(cluster: Cluster) -> None:
    await join(cluster, "a")
    await join(cluster, "b")
    await hold(cluster, "a", D, 0)
    await cluster.watch("b", D, SIZE, CHUNKS)
    await cluster.withdraw("a", [D], [])
    assert await holder(cluster, D, 0) == "b"


async def test_a_withdrawal_ends_the_nodes_leases_on_the_blob(cluster: Cluster) -> None:
    """A pull that failed withdraws its blob: a lease handed to it while it was failing (which
    it never used) moves on at once rather than linger until it lapses."""
    await join(cluster, "a")
    await join(cluster, "b")
    await locate(cluster, "a", max_leases=2, digest=E)
    await locate(cluster, "a", max_leases=2)
    await cluster.watch("b", D, SIZE, CHUNKS)
    await cluster.withdraw("a", [D], [])
    assert {await holder(cluster, D, c) for c in (0, 1)} == {"b"}
    assert {lease.digest for lease in await cluster.store.leases.held_by("a")} == {E}


async def test_peers_in_the_same_zone_come_first(cluster: Cluster) -> None:
    for node_id, zone in (("far1", "z2"), ("near", "z1"), ("far2", "z2"), ("me", "z1")):
        await join(cluster, node_id, zone)
    for node_id in ("far1", "near", "far2"):
        await hold(cluster, node_id)
    assert (await locate(cluster, "me"))[0].peers[0].node_id == "near"


# ---- malformed requests ----


@pytest.mark.parametrize(
    "digest, size, chunk_count",
    [
        ("sha256:" + "D" * 64 + "!", SIZE, CHUNKS),
        ("no-digest", SIZE, CHUNKS),
        ("sha256:" + "d" * 300, SIZE, CHUNKS),
        (D, SIZE, 0),
        (D, SIZE, 1 << 20),
        (D, 2, 4),
    ],
)
async def test_malformed_blobs_are_invalid_arguments(
    cluster: Cluster, digest: str, size: int, chunk_count: int
) -> None:
    await join(cluster, "a")
    with pytest.raises(InvalidArgument):
        await cluster.locate("a", digest, size, chunk_count)
    with pytest.raises(InvalidArgument):
        await cluster.announce("a", [Holding(digest, size, chunk_count, (0,))], [])


async def test_out_of_range_and_oversized_requests_are_invalid(cluster: Cluster) -> None:
    await join(cluster, "a")
    with pytest.raises(InvalidArgument):
        await cluster.locate("a", D, SIZE, CHUNKS, chunks=[CHUNKS])
    with pytest.raises(InvalidArgument):
        await cluster.announce("a", [Holding(D, SIZE, CHUNKS, (7,))], [])
    too_many = [Holding(f"sha256:{i:064x}", SIZE, CHUNKS, (0,)) for i in range(10_001)]
    with pytest.raises(InvalidArgument):
        await cluster.announce("a", too_many, [])
    with pytest.raises(InvalidArgument):
        await cluster.publish("a", D, SIZE, CHUNKS, 0, b"x" * (1 << 20))
    with pytest.raises(InvalidArgument):
        await cluster.join("b", "no-port", "b:6881", "", "i")
    with pytest.raises(InvalidArgument):
        await cluster.join("bad id", "b:1", "b:6881", "", "i")
    assert await cluster.store.peers.holdings("a") == {}, "a rejected announcement left a trace"


async def test_a_blob_keeps_its_shape_while_a_node_holds_or_leases_a_chunk(
    cluster: Cluster,
) -> None:
    for node_id in "abc":
        await join(cluster, node_id)
    await locate(cluster, "a", max_leases=1)
    with pytest.raises(FailedPrecondition):
        await cluster.locate("b", D, SIZE + 1, CHUNKS)
    await cluster.announce("c", [Holding(E, SIZE, CHUNKS, (0,))], [])
    with pytest.raises(FailedPrecondition):
        await cluster.locate("b", E, SIZE + 1, CHUNKS)
    with pytest.raises(FailedPrecondition):
        await cluster.watch("b", E, SIZE + 1, CHUNKS)
    assert await cluster.store.blobs.shape(D) == (SIZE, CHUNKS)
    assert await cluster.store.blobs.shape(E) == (SIZE, CHUNKS)


async def test_a_shape_nobody_holds_yields_to_the_next_one_named(cluster: Cluster) -> None:
    """A wrong manifest named the blob first (its node failed on the upstream's size and let
    its lease go; another node asks with it still): the node that pulls it with its real size
    swarms it, and announces it. The one that gave it up is no longer among its requesters."""
    for node_id in "abc":
        await join(cluster, node_id)
    await cluster.locate("a", D, SIZE + (4 << 20), CHUNKS + 1, max_leases=1)
    await cluster.locate("c", D, SIZE + (4 << 20), CHUNKS + 1, max_leases=0)
    await cluster.publish("a", D, SIZE + (4 << 20), CHUNKS + 1, 0, b"wrong")
    await cluster.release("a", D, 0)
    await cluster.withdraw("a", [D], [])
    views = await locate(cluster, "b", max_leases=1)
    assert views[0].directive is Directive.FETCH
    assert await cluster.store.blobs.shape(D) == (SIZE, CHUNKS)
    assert await cluster.store.blobs.metainfo(D, 0) is None
    assert set(await cluster.store.blobs.requesters(D)) == {"b", "c"}
    await hold(cluster, "b")
    assert set(await cluster.store.peers.holdings("b")) == {D}


async def test_an_announcement_counts_its_blobs_that_others_hold_in_another_shape(
    cluster: Cluster,
) -> None:
    for node_id in "ab":
        await join(cluster, node_id)
    await hold(cluster, "a", E)
    await cluster.announce(
        "b", [Holding(E, SIZE + 1, CHUNKS, range(CHUNKS)), Holding(D, SIZE, CHUNKS, (0,))], []
    )
    assert set(await cluster.store.peers.holdings("b")) == {D}
    assert await cluster.store.blobs.shape(E) == (SIZE, CHUNKS)


# ---- seeded refs ----


async def test_resolve_names_the_digest_and_its_holders(cluster: Cluster) -> None:
    for node_id, zone in (("a", "z1"), ("b", "z2"), ("c", "z2"), ("me", "z2")):
        await join(cluster, node_id, zone)
    for node_id in "abc":
        await cluster.announce(node_id, [], [("docker.io/library/app:1", D)])
    await cluster.announce("c", [], [("docker.io/library/app:1", E)])
    ((digest, holders, ranked), (other, _, _)) = await cluster.resolve(
        "docker.io/library/app:1", "me"
    )
    assert (digest, holders, other) == (D, 3, E)
    assert {n.id for n in ranked[:2]} == {"b", "c"}
    await cluster.leave("b")
    await cluster.withdraw(
        "c", [], [("docker.io/library/app:1", D), ("docker.io/library/app:1", E)]
    )
    assert [(d, n) for d, n, _ in await cluster.resolve("docker.io/library/app:1")] == [(D, 1)]
    assert await cluster.resolve("docker.io/library/none:1") == []


# ---- preheat ----


async def test_preheat_targets_a_count_a_zone_or_all(cluster: Cluster) -> None:
    for i in range(6):
        await join(cluster, f"n{i}", "z1" if i < 2 else "z2")
    assert len((await cluster.preheat("img:1", 0, "", 0)).targets) == 6
    assert set((await cluster.preheat("img:1", 0, "z1", 0)).targets) == {"n0", "n1"}
    three = await cluster.preheat("img:1", 3, "", 0)
    assert len(three.targets) == 3
    assert list((await cluster.preheat("img:1", 3, "", 0)).targets) == list(three.targets)
    with pytest.raises(NoTargets):
        await cluster.preheat("img:1", 0, "nowhere", 0)


async def test_preheat_is_tracked_to_done_or_failed(cluster: Cluster, clock: Clock) -> None:
    for node_id in ("a", "b", "c"):
        await join(cluster, node_id)
    job = await cluster.preheat("img:1", 0, "", 10)
    inbox = await cluster.open_inbox("a")
    order = await cluster.next_order(inbox)
    assert order == PreheatOrder(job.id, "img:1")
    job = await cluster.preheat_status(job.id)
    assert job.targets["a"].state is TaskState.DELIVERED
    await cluster.report("a", job.id, True, "")
    await cluster.leave("b")
    job = await cluster.preheat_status(job.id)
    assert job.targets["b"].state is TaskState.FAILED
    assert not job.finished
    clock.advance(11)
    await cluster.heartbeat("c", Load())
    await cluster.sweep()
    job = await cluster.preheat_status(job.id)
    assert job.targets["c"].state is TaskState.FAILED and job.targets["c"].message == "timed out"
    assert job.finished and job.targets["a"].state is TaskState.DONE
    with pytest.raises(TaskUnknown):
        await cluster.report("c", "preheat-999", True, "")


async def test_a_rejoining_node_gets_its_unfinished_preheat_again(cluster: Cluster) -> None:
    await join(cluster, "a", instance="one")
    job = await cluster.preheat("img:1", 0, "", 0)
    await cluster.next_order(await cluster.open_inbox("a"))
    await join(cluster, "a", instance="two")
    assert await orders(cluster, "a") == [PreheatOrder(job.id, "img:1")]
    job = await cluster.preheat_status(job.id)
    assert job.targets["a"].state is TaskState.PENDING


# ---- bounds ----


async def test_a_node_may_ask_about_so_many_blobs(
    cluster: Cluster, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tracker.placement.MAX_REQUESTED_PER_NODE", 3)
    await join(cluster, "a")
    digests = [f"sha256:{i:064x}" for i in range(4)]
    for digest in digests[:3]:
        await cluster.locate("a", digest, SIZE, CHUNKS)
    with pytest.raises(InvalidArgument):
        await cluster.locate("a", digests[3], SIZE, CHUNKS)
    assert await cluster.store.blobs.shape(digests[3]) is None
    clock.advance(3600)
    await cluster.heartbeat("a", Load())
    await cluster.sweep()  # requests this old are forgotten, and the blobs nobody holds with them
    assert await cluster.store.blobs.count() == 0
    await cluster.locate("a", digests[3], SIZE, CHUNKS)


async def test_the_cluster_has_a_size_limit(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tracker.cluster.MAX_NODES", 2)
    await join(cluster, "a")
    await join(cluster, "b")
    with pytest.raises(FailedPrecondition):
        await join(cluster, "c")
    await join(cluster, "b")  # joining again is always possible


async def test_a_corrupt_withdrawal_forgets_the_metainfo_nobody_holds_whole(
    cluster: Cluster,
) -> None:
    for node_id in "abc":
        await join(cluster, node_id)
    await cluster.publish("a", D, SIZE, CHUNKS, 0, b"meta0")
    await cluster.publish("b", D, SIZE, CHUNKS, 1, b"bad1")
    await cluster.withdraw("b", [D], [], corrupt=True)
    views = await cluster.view("c", D, SIZE, CHUNKS, [0, 1])
    assert [v.metainfo for v in views] == [b"meta0", None]
    await cluster.publish("c", D, SIZE, CHUNKS, 1, b"good1")  # no conflict with what was forgotten
    assert [v.metainfo for v in await cluster.view("a", D, SIZE, CHUNKS, [1])] == [b"good1"]
    await cluster.withdraw("c", [D], [])  # a plain withdrawal keeps the metainfo
    assert [v.metainfo for v in await cluster.view("a", D, SIZE, CHUNKS, [1])] == [b"good1"]


async def test_a_chunk_its_only_holder_cannot_read_is_leased_out_and_the_rest_still_served(
    abc: Cluster,
) -> None:
    """a holds D whole, but the file of chunk 1 cannot be read: it withdraws that chunk alone.
    A puller of D is sent to a for every other chunk, and chunk 1 is leased to a watcher at once
    (no node holds it), rather than the puller waiting on a source that cannot send it."""
    cluster = abc
    await hold(cluster, "a", D)
    await cluster.watch("b", D, SIZE, CHUNKS)
    assert await holder(cluster, D, 1) is None
    await cluster.withdraw("a", [D], [], chunks=[1])
    assert await holder(cluster, D, 1) == "b"
    views = await cluster.view("c", D, SIZE, CHUNKS, list(range(CHUNKS)))
    assert ["a" in peer_ids(v) for v in views] == [i != 1 for i in range(CHUNKS)]
    assert await cluster.store.peers.masks("a", D) == (mask_of({0, 2, 3}), 0)
    await cluster.withdraw("a", [D], [], chunks=[1])  # again: nothing more changes
    assert await cluster.store.peers.masks("a", D) == (mask_of({0, 2, 3}), 0)
    await cluster.announce("a", [], [("app:1", D)])
    assert await cluster.store.refs.count("a") == 1
    await cluster.withdraw("a", [D], [("app:1", D)], chunks=[2])  # refs go as they would
    assert await cluster.store.peers.masks("a", D) == (mask_of({0, 3}), 0)
    assert await cluster.store.refs.count("a") == 0
    with pytest.raises(InvalidArgument):
        await cluster.withdraw("a", [D], [], chunks=[CHUNKS])
    with pytest.raises(InvalidArgument):
        await cluster.withdraw("a", [D, E], [], chunks=[0])


async def test_a_silent_source_is_passed_over_until_it_is_heard_again(
    abc: Cluster, clock: Clock
) -> None:
    cluster = abc
    await hold(cluster, "a", D, 0)
    await cluster.locate("a", D, SIZE, CHUNKS, chunks=[1], max_leases=1)
    await cluster.watch("b", D, SIZE, CHUNKS)
    assert "a" in peer_ids((await cluster.view("c", D, SIZE, CHUNKS, [0]))[0])
    # a misses its heartbeats (it died, most likely): long before it expires, chunk 0 has no
    # source, so it is fetched anew, and nobody is sent to a.
    clock.advance(1.6)
    for node_id in "bc":
        await cluster.heartbeat(node_id, Load())
    await cluster.sweep()
    assert "a" in await members(cluster)
    assert await holder(cluster, D, 0) == "b"
    assert await holder(cluster, D, 1) == "b"
    (view,) = await cluster.view("c", D, SIZE, CHUNKS, [0])
    assert view.directive is Directive.WAIT and peer_ids(view) == set()
    # It was only slow: heard again, it is the source, and the fetch it made needless ends.
    await cluster.heartbeat("a", Load())
    assert await holder(cluster, D, 0) is None
    (view,) = await cluster.view("c", D, SIZE, CHUNKS, [0])
    assert view.directive is Directive.SWARM and "a" in peer_ids(view)


async def test_an_announcement_leaves_out_a_blob_others_hold_in_another_shape(
    cluster: Cluster,
) -> None:
    for node_id in "ab":
        await join(cluster, node_id)
    await cluster.announce("a", [Holding(E, SIZE, CHUNKS, (0,))], [])
    await cluster.announce(
        "b", [Holding(E, SIZE + 1, CHUNKS, (1,)), Holding(D, SIZE, CHUNKS, (0,))], []
    )
    assert set(await cluster.store.peers.holdings("b")) == {D}
    assert await cluster.store.blobs.shape(E) == (SIZE, CHUNKS)
