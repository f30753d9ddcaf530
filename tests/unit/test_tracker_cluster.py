"""The tracker's rules, on its state alone (no sockets), with a clock the tests move by hand."""

from __future__ import annotations

import random

import pytest

from tracker.cluster import ChunkView, Cluster, Directive, Holding, Load, Policy
from tracker.errors import (
    FailedPrecondition,
    InvalidArgument,
    MetainfoConflict,
    NodeUnknown,
    NoTargets,
    TaskUnknown,
)
from tracker.tasks import PreheatOrder, RepublishOrder, TaskState

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


@pytest.fixture
def cluster(clock: Clock) -> Cluster:
    policy = Policy(
        heartbeat_interval=1, node_ttl=3, lease_ttl=2, max_peers=5, blob_leases=8, upstream_leases=8
    )
    return Cluster(policy, clock=clock, rng=random.Random(3))


def join(cluster: Cluster, node_id: str, zone: str = "", instance: str = "i1") -> None:
    cluster.join(node_id, f"{node_id}:8080", f"{node_id}:6881", zone, instance)


def hold(cluster: Cluster, node_id: str, digest: str = D, *chunks: int) -> None:
    complete = chunks or tuple(range(CHUNKS))
    cluster.announce(node_id, [Holding(digest, SIZE, CHUNKS, complete)], [])


def locate(cluster: Cluster, node_id: str, max_leases: int = 0, digest: str = D) -> list[ChunkView]:
    return cluster.locate(node_id, digest, SIZE, CHUNKS, max_leases=max_leases)


def directives(views: list[ChunkView]) -> list[Directive]:
    return [v.directive for v in views]


def peer_ids(view: ChunkView) -> set[str]:
    return {p.node_id for p in view.peers}


# ---- membership ----


def test_a_silent_node_is_forgotten_after_its_ttl(cluster: Cluster, clock: Clock) -> None:
    join(cluster, "a")
    join(cluster, "b")
    hold(cluster, "a")
    for _ in range(5):
        clock.advance(1)
        cluster.heartbeat("b", Load(uploads=1))
        cluster.sweep()
    assert set(cluster.nodes) == {"b"}
    with pytest.raises(NodeUnknown):
        cluster.heartbeat("a", Load())
    assert all(v.directive is Directive.WAIT for v in locate(cluster, "b"))


def test_unknown_nodes_are_told_to_join(cluster: Cluster) -> None:
    with pytest.raises(NodeUnknown):
        cluster.heartbeat("ghost", Load())
    with pytest.raises(NodeUnknown):
        locate(cluster, "ghost")
    with pytest.raises(NodeUnknown):
        hold(cluster, "ghost")


def test_joining_again_replaces_the_inventory(cluster: Cluster) -> None:
    join(cluster, "a")
    hold(cluster, "a")
    join(cluster, "a")
    assert cluster.store.holdings("a") == {}


def test_everything_is_forgotten_once_nodes_leave(cluster: Cluster) -> None:
    join(cluster, "a")
    join(cluster, "b")
    hold(cluster, "a")
    locate(cluster, "b", max_leases=2, digest=E)
    cluster.leave("a")
    cluster.leave("b")
    assert cluster.blobs == {} and len(cluster.leases) == 0 and cluster.nodes == {}


# ---- leases ----


def test_cold_chunks_are_leased_to_one_requester_each(cluster: Cluster) -> None:
    join(cluster, "a")
    join(cluster, "b")
    first = locate(cluster, "a", max_leases=2)
    assert directives(first) == [Directive.FETCH] * 2 + [Directive.WAIT] * 2
    second = locate(cluster, "b", max_leases=4)
    assert directives(second) == [Directive.WAIT] * 2 + [Directive.FETCH] * 2
    assert [v.lease_holder for v in second] == ["a", "a", "b", "b"]
    assert all(v.lease_seconds > 0 for v in second)


def test_the_lease_budget_is_capped_by_the_tracker(cluster: Cluster) -> None:
    cluster.policy.max_leases = 1
    join(cluster, "a")
    assert directives(locate(cluster, "a", max_leases=4)).count(Directive.FETCH) == 1
    assert directives(locate(cluster, "a", max_leases=4)).count(Directive.FETCH) == 1


def test_few_chunks_of_a_blob_are_leased_at_once_cluster_wide(cluster: Cluster) -> None:
    cluster.policy.blob_leases = 3
    for node_id in "abc":
        join(cluster, node_id)
    assert directives(locate(cluster, "a", max_leases=2)).count(Directive.FETCH) == 2
    assert directives(locate(cluster, "b", max_leases=2)).count(Directive.FETCH) == 1
    assert directives(locate(cluster, "c", max_leases=2)).count(Directive.FETCH) == 0
    cluster.publish("a", D, SIZE, CHUNKS, 0, b"meta0")  # chunk 0 done: its lease frees up
    assert [
        v.index for v in locate(cluster, "c", max_leases=2) if v.directive is Directive.FETCH
    ] == [3]


def test_freed_upstream_slots_go_to_the_longest_watched_blob_in_chunk_order(
    cluster: Cluster,
) -> None:
    cluster.policy.upstream_leases = 2
    for node_id in "ab":
        join(cluster, node_id)
    assert (
        directives(locate(cluster, "a", max_leases=2))
        == [Directive.FETCH] * 2 + [Directive.WAIT] * 2
    )
    cluster.watch("b", D, SIZE, CHUNKS)  # D is the longest watched blob
    watchers = {node_id: cluster.watch(node_id, E, SIZE, CHUNKS) for node_id in "ab"}
    # The cluster's two slots are taken: the younger blob gets none, nobody polls for one.
    assert directives(locate(cluster, "b", max_leases=2, digest=E)) == [Directive.WAIT] * 4
    # Chunk 0 is in and being published: its slot goes to the older blob's next chunk, 2, and
    # to b, the watcher fetching least; the lease on 0 lasts until it is published.
    assert cluster.renew("a", D, 0, 1000, fetched=True) is not None
    assert (cluster.leases.get(D, 2).holder, cluster.leases.get(D, 0).holder) == ("b", "a")  # type: ignore[union-attr]
    cluster.publish("a", D, SIZE, CHUNKS, 1, b"meta1")  # 1 is done: 3 is next, then E
    assert cluster.leases.get(D, 3) is not None and cluster.leases.get(E, 0) is None
    cluster.publish("a", D, SIZE, CHUNKS, 0, b"meta0")
    cluster.publish("b", D, SIZE, CHUNKS, 2, b"meta2")
    assert cluster.leases.get(E, 0) is not None  # D has no cold chunk left unleased
    assert all(0 in watcher._dirty for watcher in watchers.values())


@pytest.fixture
def abc(cluster: Cluster) -> Cluster:
    """Nodes a, b and c; one missing heartbeats for 1.5 s is silent."""
    cluster.policy.silent_after = 1.5
    for node_id in "abc":
        join(cluster, node_id)
    return cluster


def test_a_lapsed_lease_goes_to_a_watcher_that_still_heartbeats(abc: Cluster, clock: Clock) -> None:
    cluster = abc
    cluster.locate("a", D, SIZE, CHUNKS, chunks=[1], max_leases=1)
    for node_id in "bc":
        cluster.watch(node_id, D, SIZE, CHUNKS)
    # c died: it holds no lease, so it looks the least busy, and chunk 1 would rotate to it.
    for _ in range(2):
        clock.advance(1.0)
        for node_id in "ab":
            cluster.heartbeat(node_id, Load())
    cluster.sweep()
    assert cluster.leases.get(D, 1).holder == "b"  # type: ignore[union-attr]


def test_a_lease_is_kept_while_the_fetch_progresses(cluster: Cluster, clock: Clock) -> None:
    join(cluster, "a")
    join(cluster, "b")
    locate(cluster, "a", max_leases=1)
    for progress in range(1, 10):
        clock.advance(1)
        for node_id in "ab":
            cluster.heartbeat(node_id, Load())
        assert cluster.renew("a", D, 0, progress * 1000) is not None
        cluster.sweep()
    assert locate(cluster, "b", max_leases=4)[0].lease_holder == "a"


def test_a_stalled_lease_moves_to_a_watcher(cluster: Cluster, clock: Clock) -> None:
    join(cluster, "a")
    join(cluster, "b")
    locate(cluster, "a", max_leases=1)
    watcher = cluster.watch("b", D, SIZE, CHUNKS)
    cluster.renew("a", D, 0, 500)
    clock.advance(1.5)
    assert cluster.renew("a", D, 0, 500) is not None  # alive, but no progress
    clock.advance(1.0)
    cluster.sweep()
    assert cluster.renew("a", D, 0, 600) is None
    assert cluster.leases.get(D, 0).holder == "b"  # type: ignore[union-attr]
    assert 0 in watcher._dirty
    assert cluster.view("b", D, [0])[0].directive is Directive.FETCH


def test_a_leaving_holder_hands_its_lease_on_at_once(cluster: Cluster) -> None:
    join(cluster, "a")
    join(cluster, "b")
    locate(cluster, "a", max_leases=2)
    cluster.watch("b", D, SIZE, CHUNKS)
    cluster.leave("a")
    assert {cluster.leases.get(D, c).holder for c in (0, 1)} == {"b"}  # type: ignore[union-attr]


def test_a_released_lease_goes_to_another_requester(cluster: Cluster) -> None:
    join(cluster, "a")
    join(cluster, "b")
    locate(cluster, "a", max_leases=1)
    cluster.watch("a", D, SIZE, CHUNKS)
    cluster.watch("b", D, SIZE, CHUNKS)
    cluster.release("a", D, 0)
    assert cluster.leases.get(D, 0).holder == "b"  # type: ignore[union-attr]


def test_a_restarted_node_loses_its_leases_but_a_rejoin_keeps_them(cluster: Cluster) -> None:
    join(cluster, "a", instance="one")
    locate(cluster, "a", max_leases=2)
    join(cluster, "a", instance="one")
    assert len(cluster.leases.held_by("a")) == 2
    join(cluster, "a", instance="two")
    assert cluster.leases.held_by("a") == []


def test_leases_stay_exclusive_under_random_operations(clock: Clock) -> None:
    rng = random.Random(11)
    cluster = Cluster(Policy(heartbeat_interval=1, node_ttl=3, lease_ttl=2), clock, rng)
    names = [f"n{i}" for i in range(8)]
    for step in range(3000):
        node_id = rng.choice(names)
        action = rng.random()
        if node_id not in cluster.nodes:
            join(cluster, node_id)
        elif action < 0.4:
            views = locate(cluster, node_id, max_leases=rng.randint(0, 4))
            for view in views:
                lease = cluster.leases.get(D, view.index)
                assert (view.directive is Directive.FETCH) == (
                    lease is not None and lease.holder == node_id
                )
        elif action < 0.6:
            cluster.renew(node_id, D, rng.randrange(CHUNKS), step)
        elif action < 0.7:
            chunk = rng.randrange(CHUNKS)
            cluster.publish(node_id, D, SIZE, CHUNKS, chunk, b"meta%d" % chunk)
        elif action < 0.75:
            cluster.leave(node_id)
        elif action < 0.8:
            cluster.withdraw(node_id, [D], [])
        elif action < 0.85:
            cluster.watch(node_id, D, SIZE, CHUNKS)
        else:
            clock.advance(rng.random())
            cluster.heartbeat(node_id, Load())
            cluster.sweep()
        check_lease_invariants(cluster)


def check_lease_invariants(cluster: Cluster) -> None:
    by_holder = {
        lease.key: lease.holder
        for node_id in cluster.nodes
        for lease in cluster.leases.held_by(node_id)
    }
    for lease in cluster.leases:
        assert lease.holder in cluster.nodes, "a lease held by a node that is gone"
        assert by_holder[lease.key] == lease.holder
        # Warm: held whole by a member that is not silent (silent ones may be dead).
        assert cluster.placement.sources(lease.digest, lease.chunk) == 0, "a lease on a warm chunk"
        assert cluster.leases.count(lease.holder, lease.digest) <= cluster.policy.max_leases
    assert len(by_holder) == len(cluster.leases)


# ---- sources, metainfo and fan-out ----


def test_publishing_ends_the_lease_and_the_others_swarm(cluster: Cluster) -> None:
    join(cluster, "a")
    join(cluster, "b")
    locate(cluster, "a", max_leases=1)
    cluster.publish("a", D, SIZE, CHUNKS, 0, b"meta0")
    assert cluster.leases.get(D, 0) is None
    view = locate(cluster, "b")[0]
    assert view.directive is Directive.SWARM
    assert view.metainfo == b"meta0"
    assert [(p.node_id, p.complete) for p in view.peers] == [("a", True)]
    assert locate(cluster, "b")[0].metainfo == b"meta0"
    assert cluster.locate("b", D, SIZE, CHUNKS, with_metainfo=False)[0].metainfo is None


def test_a_chunk_cannot_be_published_with_other_metainfo(cluster: Cluster) -> None:
    join(cluster, "a")
    join(cluster, "b")
    cluster.publish("a", D, SIZE, CHUNKS, 0, b"meta0")
    cluster.publish("b", D, SIZE, CHUNKS, 0, b"meta0")
    with pytest.raises(MetainfoConflict):
        cluster.publish("b", D, SIZE, CHUNKS, 0, b"other")


def test_a_single_source_is_handed_to_two_requesters_only(cluster: Cluster) -> None:
    join(cluster, "src")
    requesters = [f"r{i}" for i in range(6)]
    for r in requesters:
        join(cluster, r)
        locate(cluster, r)
    hold(cluster, "src", D, 0, 1, 2, 3)
    relays_by_chunk = []
    for chunk in range(CHUNKS):
        given_source = {r for r in requesters if "src" in peer_ids(locate(cluster, r)[chunk])}
        assert len(given_source) == 2
        for r in set(requesters) - given_source:
            view = locate(cluster, r)[chunk]
            assert peer_ids(view) == given_source
            assert all(not p.complete for p in view.peers)
        relays_by_chunk.append(frozenset(given_source))
    assert len(set(relays_by_chunk)) > 1, "the same two requesters relay every chunk"


def test_fan_out_ends_once_a_second_node_holds_the_chunk(cluster: Cluster) -> None:
    join(cluster, "src")
    for r in ("r0", "r1", "r2", "r3"):
        join(cluster, r)
        locate(cluster, r)
    hold(cluster, "src", D, 0)
    relays = [r for r in ("r0", "r1", "r2", "r3") if "src" in peer_ids(locate(cluster, r)[0])]
    hold(cluster, relays[0], D, 0)
    for r in ("r0", "r1", "r2", "r3"):
        if r != relays[0]:
            view = locate(cluster, r)[0]
            assert {p.node_id for p in view.peers if p.complete} == {"src", relays[0]}


def test_a_relay_that_never_starts_is_replaced(cluster: Cluster, clock: Clock) -> None:
    join(cluster, "src")
    for r in ("r0", "r1", "r2"):
        join(cluster, r)
        locate(cluster, r)
    hold(cluster, "src", D, 0)
    relays = {r for r in ("r0", "r1", "r2") if "src" in peer_ids(locate(cluster, r)[0])}
    (other,) = {"r0", "r1", "r2"} - relays
    clock.advance(cluster.policy.lease_ttl + 0.5)
    assert "src" in peer_ids(locate(cluster, other)[0])


def test_a_relay_that_goes_silent_is_replaced_at_once(abc: Cluster, clock: Clock) -> None:
    """A relay that died mid-chunk would leave the requesters it was to serve waiting on it until
    it expires; once silent, it is no relay."""
    cluster = abc
    for r in ("r0", "r1"):
        join(cluster, r)
    for r in ("r0", "r1", "b", "c"):
        locate(cluster, r)
    hold(cluster, "a", D, 0)
    relays = {r for r in ("r0", "r1", "b", "c") if "a" in peer_ids(locate(cluster, r)[0])}
    (dead, alive) = sorted(relays)
    cluster.announce(dead, [Holding(D, SIZE, CHUNKS, (), (0,))], [])  # it had started
    others = {"r0", "r1", "b", "c"} - relays
    assert all("a" not in peer_ids(locate(cluster, r)[0]) for r in others)
    clock.advance(1.6)
    for node_id in ("a", alive, *others):
        cluster.heartbeat(node_id, Load())
    cluster.sweep()
    assert dead in cluster.nodes and dead in cluster.placement.silent
    for r in others:
        assert "a" in peer_ids(locate(cluster, r)[0]) or alive in peer_ids(locate(cluster, r)[0])
        assert dead not in peer_ids(locate(cluster, r)[0])


def test_a_holder_is_asked_to_republish_missing_metainfo(cluster: Cluster) -> None:
    join(cluster, "a")
    join(cluster, "b")
    hold(cluster, "a", D, 0, 1)
    locate(cluster, "b")
    locate(cluster, "b")  # asked once per lease_ttl, not on every locate
    order = cluster.nodes["a"].mailbox._items.popleft()
    assert isinstance(order, RepublishOrder)
    assert (order.digest, order.size, order.chunk_count, order.chunks) == (D, SIZE, CHUNKS, (0, 1))
    assert not cluster.nodes["a"].mailbox._items


def test_a_chunk_whose_last_holder_withdraws_is_leased_again(cluster: Cluster) -> None:
    join(cluster, "a")
    join(cluster, "b")
    hold(cluster, "a", D, 0)
    cluster.watch("b", D, SIZE, CHUNKS)
    cluster.withdraw("a", [D], [])
    assert cluster.leases.get(D, 0).holder == "b"  # type: ignore[union-attr]


def test_peers_in_the_same_zone_come_first(cluster: Cluster) -> None:
    for node_id, zone in (("far1", "z2"), ("near", "z1"), ("far2", "z2"), ("me", "z1")):
        join(cluster, node_id, zone)
    for node_id in ("far1", "near", "far2"):
        hold(cluster, node_id)
    assert locate(cluster, "me")[0].peers[0].node_id == "near"


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
def test_malformed_blobs_are_invalid_arguments(
    cluster: Cluster, digest: str, size: int, chunk_count: int
) -> None:
    join(cluster, "a")
    with pytest.raises(InvalidArgument):
        cluster.locate("a", digest, size, chunk_count)
    with pytest.raises(InvalidArgument):
        cluster.announce("a", [Holding(digest, size, chunk_count, (0,))], [])


def test_out_of_range_and_oversized_requests_are_invalid(cluster: Cluster) -> None:
    join(cluster, "a")
    with pytest.raises(InvalidArgument):
        cluster.locate("a", D, SIZE, CHUNKS, chunks=[CHUNKS])
    with pytest.raises(InvalidArgument):
        cluster.announce("a", [Holding(D, SIZE, CHUNKS, (7,))], [])
    too_many = [Holding(f"sha256:{i:064x}", SIZE, CHUNKS, (0,)) for i in range(10_001)]
    with pytest.raises(InvalidArgument):
        cluster.announce("a", too_many, [])
    with pytest.raises(InvalidArgument):
        cluster.publish("a", D, SIZE, CHUNKS, 0, b"x" * (1 << 20))
    with pytest.raises(InvalidArgument):
        cluster.join("b", "no-port", "b:6881", "", "i")
    with pytest.raises(InvalidArgument):
        cluster.join("bad id", "b:1", "b:6881", "", "i")
    assert cluster.store.holdings("a") == {}, "a rejected announcement left something behind"


def test_a_blob_keeps_the_shape_it_was_first_seen_with(cluster: Cluster) -> None:
    join(cluster, "a")
    locate(cluster, "a")
    with pytest.raises(FailedPrecondition):
        cluster.locate("a", D, SIZE + 1, CHUNKS)


# ---- seeded refs ----


def test_resolve_names_the_digest_and_its_holders(cluster: Cluster) -> None:
    for node_id, zone in (("a", "z1"), ("b", "z2"), ("c", "z2"), ("me", "z2")):
        join(cluster, node_id, zone)
    for node_id in "abc":
        cluster.announce(node_id, [], [("docker.io/library/app:1", D)])
    cluster.announce("c", [], [("docker.io/library/app:1", E)])
    ((digest, holders, ranked), (other, _, _)) = cluster.resolve("docker.io/library/app:1", "me")
    assert (digest, holders, other) == (D, 3, E)
    assert {p.node_id for p in ranked[:2]} == {"b", "c"}
    cluster.leave("b")
    cluster.withdraw("c", [], [("docker.io/library/app:1", D), ("docker.io/library/app:1", E)])
    assert [(d, n) for d, n, _ in cluster.resolve("docker.io/library/app:1")] == [(D, 1)]
    assert cluster.resolve("docker.io/library/none:1") == []


# ---- preheat ----


def test_preheat_targets_a_count_a_zone_or_all(cluster: Cluster) -> None:
    for i in range(6):
        join(cluster, f"n{i}", "z1" if i < 2 else "z2")
    assert len(cluster.preheat("img:1", 0, "", 0).targets) == 6
    assert set(cluster.preheat("img:1", 0, "z1", 0).targets) == {"n0", "n1"}
    three = cluster.preheat("img:1", 3, "", 0)
    assert len(three.targets) == 3
    assert list(cluster.preheat("img:1", 3, "", 0).targets) == list(three.targets)
    with pytest.raises(NoTargets):
        cluster.preheat("img:1", 0, "nowhere", 0)


def test_preheat_is_tracked_to_done_or_failed(cluster: Cluster, clock: Clock) -> None:
    for node_id in ("a", "b", "c"):
        join(cluster, node_id)
    job = cluster.preheat("img:1", 0, "", 10)
    order = cluster.mailbox("a")._items[0]
    assert order == PreheatOrder(job.id, "img:1")
    cluster.delivered("a", order)
    assert job.targets["a"].state is TaskState.DELIVERED
    cluster.report("a", job.id, True, "")
    cluster.leave("b")
    assert job.targets["b"].state is TaskState.FAILED
    assert not job.finished
    clock.advance(11)
    cluster.heartbeat("c", Load())
    cluster.sweep()
    assert job.targets["c"].state is TaskState.FAILED and job.targets["c"].message == "timed out"
    assert job.finished and job.targets["a"].state is TaskState.DONE
    with pytest.raises(TaskUnknown):
        cluster.report("c", "preheat-999", True, "")


def test_a_rejoining_node_gets_its_unfinished_preheat_again(cluster: Cluster) -> None:
    join(cluster, "a", instance="one")
    job = cluster.preheat("img:1", 0, "", 0)
    cluster.delivered("a", cluster.mailbox("a")._items.popleft())
    join(cluster, "a", instance="two")
    assert cluster.mailbox("a")._items[0] == PreheatOrder(job.id, "img:1")
    assert job.targets["a"].state is TaskState.PENDING


# ---- bounds ----


def test_a_node_may_ask_about_so_many_blobs(
    cluster: Cluster, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tracker.placement.MAX_REQUESTED_PER_NODE", 3)
    join(cluster, "a")
    digests = [f"sha256:{i:064x}" for i in range(4)]
    for digest in digests[:3]:
        cluster.locate("a", digest, SIZE, CHUNKS)
    with pytest.raises(InvalidArgument):
        cluster.locate("a", digests[3], SIZE, CHUNKS)
    assert digests[3] not in cluster.blobs
    clock.advance(3600)
    cluster.heartbeat("a", Load())
    cluster.sweep()  # requests this old are forgotten, and the blobs nobody holds with them
    assert cluster.blobs == {}
    cluster.locate("a", digests[3], SIZE, CHUNKS)


def test_the_cluster_has_a_size_limit(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tracker.cluster.MAX_NODES", 2)
    join(cluster, "a")
    join(cluster, "b")
    with pytest.raises(FailedPrecondition):
        join(cluster, "c")
    join(cluster, "b")  # joining again is always possible


def test_a_corrupt_withdrawal_forgets_the_metainfo_nobody_holds_whole(cluster: Cluster) -> None:
    for node_id in "abc":
        join(cluster, node_id)
    cluster.publish("a", D, SIZE, CHUNKS, 0, b"meta0")
    cluster.publish("b", D, SIZE, CHUNKS, 1, b"bad1")
    cluster.withdraw("b", [D], [], corrupt=True)
    assert [v.metainfo for v in cluster.view("c", D, [0, 1])] == [b"meta0", None]
    cluster.publish("c", D, SIZE, CHUNKS, 1, b"good1")  # no conflict with what was forgotten
    assert [v.metainfo for v in cluster.view("a", D, [1])] == [b"good1"]
    cluster.withdraw("c", [D], [])  # a plain withdrawal keeps the metainfo
    assert [v.metainfo for v in cluster.view("a", D, [1])] == [b"good1"]


def test_a_silent_source_is_passed_over_until_it_is_heard_again(abc: Cluster, clock: Clock) -> None:
    cluster = abc
    hold(cluster, "a", D, 0)
    cluster.locate("a", D, SIZE, CHUNKS, chunks=[1], max_leases=1)
    cluster.watch("b", D, SIZE, CHUNKS)
    assert "a" in peer_ids(cluster.view("c", D, [0])[0])
    # a misses its heartbeats (it died, most likely): long before it expires, chunk 0 has no
    # source, so it is fetched anew, and nobody is sent to a.
    clock.advance(1.6)
    for node_id in "bc":
        cluster.heartbeat(node_id, Load())
    cluster.sweep()
    assert "a" in cluster.nodes
    assert cluster.leases.get(D, 0).holder == "b"  # type: ignore[union-attr]
    assert cluster.leases.get(D, 1).holder == "b"  # type: ignore[union-attr]
    (view,) = cluster.view("c", D, [0])
    assert view.directive is Directive.WAIT and peer_ids(view) == set()
    # It was only slow: heard again, it is the source, and the fetch it made needless ends.
    cluster.heartbeat("a", Load())
    assert cluster.leases.get(D, 0) is None
    (view,) = cluster.view("c", D, [0])
    assert view.directive is Directive.SWARM and "a" in peer_ids(view)
