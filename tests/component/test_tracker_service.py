"""The tracker's RPCs over real gRPC on 127.0.0.1, through the client nodes use."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
import redis.asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.stores import STORES, fresh_storage
from tracker.app import Config, TrackerServer
from tracker.client import (
    CheckOrder,
    Directive,
    HeldBlob,
    NodeAddress,
    PreheatOrder,
    SeededRef,
    TaskState,
    TrackerClient,
)
from tracker.cluster import Policy
from tracker.errors import (
    InvalidArgument,
    NodeUnknown,
    NoTargets,
    TaskUnknown,
    TrackerError,
    TrackerUnavailable,
)
from tracker.store import Replica
from tracker.v1 import tracker_pb2 as pb
from tracker.v1 import tracker_pb2_grpc

D = "sha256:" + "d" * 64
SIZE, CHUNKS = 40 << 20, 4


@pytest.fixture(params=STORES)
async def tracker(request: pytest.FixtureRequest) -> AsyncIterator[TrackerServer]:
    policy = Policy(heartbeat_interval=0.2, node_ttl=30.0, lease_ttl=10.0)
    config = Config(
        listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        seeder=["n1"],
        policy=policy,
        storage=fresh_storage(request, request.param),
    )
    server = TrackerServer(config)
    await server.start()
    yield server
    await server.stop(grace=0)


@pytest.fixture
async def client(tracker: TrackerServer) -> AsyncIterator[TrackerClient]:
    c = TrackerClient(tracker.address, timeout=5)
    yield c
    await c.close()


def node(name: str, zone: str = "") -> NodeAddress:
    return NodeAddress(
        name, f"127.0.0.1:{8000 + int(name[1:])}", f"127.0.0.1:{7000 + int(name[1:])}", zone
    )


async def test_nodes_join_announce_and_appear_in_status(client: TrackerClient) -> None:
    session = await client.join(node("n1", "z1"), "inst")
    assert session.heartbeat_interval == pytest.approx(0.2)
    await client.join(node("n2"), "inst")
    await client.announce("n1", [HeldBlob(D, SIZE, CHUNKS, (0, 1, 2, 3))], [SeededRef("app:1", D)])
    await client.heartbeat("n1")
    status = await client.status(include_blobs=True)
    by_id = {n.id: n for n in status.nodes}
    assert set(by_id) == {"n1", "n2"}
    assert (by_id["n1"].registry, by_id["n1"].peer, by_id["n1"].zone) == (
        "127.0.0.1:8001",
        "127.0.0.1:7001",
        "z1",
    )
    assert (by_id["n1"].blobs, by_id["n1"].chunks) == (1, 4)
    assert status.blob_count == 1 and status.chunk_count == 4
    assert status.blobs[0].holders == 1 and status.blobs[0].min_swarm == 1


async def test_a_node_hears_which_blobs_its_announcement_left_out(
    client: TrackerClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Others hold the blob in another shape: the node's other blobs count, and it is told (and
    says in its log) which one was left out, rather than believe it serves it."""
    E = "sha256:" + "e" * 64
    await client.join(node("n1"), "inst")
    await client.join(node("n2"), "inst")
    await client.announce("n1", [HeldBlob(D, SIZE, CHUNKS, (0, 1, 2, 3))])
    refused = await client.announce(
        "n2", [HeldBlob(D, SIZE + 1, CHUNKS, (0, 1, 2, 3)), HeldBlob(E, SIZE, CHUNKS, (0,))]
    )
    assert refused == [D]
    told = [r for r in caplog.records if r.name == "tracker.client"]
    assert [(r.levelname, getattr(r, "digests", None)) for r in told] == [("WARNING", [D])]
    assert await client.announce("n1", [HeldBlob(E, SIZE, CHUNKS, (1,))]) == []


async def test_locate_gives_leases_then_peers_with_metainfo(client: TrackerClient) -> None:
    await client.join(node("n1"), "i")
    await client.join(node("n2"), "i")
    placement = await client.locate("n1", D, SIZE, CHUNKS, max_leases=1)
    assert [c.directive for c in placement.chunks] == [Directive.FETCH] + [Directive.WAIT] * 3
    assert await client.renew_lease("n1", D, 0, progress=1024)
    assert not await client.renew_lease("n2", D, 0, progress=1024)
    await client.publish("n1", D, SIZE, CHUNKS, 0, b"d8:metainfoe")
    seen = await client.locate("n2", D, SIZE, CHUNKS, chunks=[0])
    (chunk,) = seen.chunks
    assert chunk.directive is Directive.SWARM
    assert chunk.metainfo == b"d8:metainfoe"
    assert [p.node_id for p in chunk.peers] == ["n1"] and chunk.complete == {"n1"}
    assert chunk.peers[0].peer == "127.0.0.1:7001"


async def test_watch_streams_published_chunks_and_lease_moves(client: TrackerClient) -> None:
    await client.join(node("n1"), "i")
    await client.join(node("n2"), "i")
    await client.locate("n1", D, SIZE, CHUNKS, max_leases=2)
    async with client.watch("n2", D, SIZE, CHUNKS) as events:
        await client.publish("n1", D, SIZE, CHUNKS, 0, b"meta0")
        first = await asyncio.wait_for(anext(events), 5)
        # The lease chunk 0 freed goes to the next cold chunks (3 at once on a blob), and to
        # n2, the only node watching.
        assert [(c.index, c.directive, c.metainfo) for c in first.chunks] == [
            (0, Directive.SWARM, b"meta0"),
            (2, Directive.FETCH, None),
            (3, Directive.FETCH, None),
        ]
        await client.release_lease("n1", D, 1, reason="upstream failed")
        moved = await asyncio.wait_for(anext(events), 5)
        assert [(c.index, c.directive) for c in moved.chunks] == [(1, Directive.FETCH)]


async def test_tasks_stream_delivers_preheat_and_reports_come_back(client: TrackerClient) -> None:
    for name in ("n1", "n2", "n3"):
        await client.join(node(name, "z1" if name != "n3" else "z2"), "i")
    ticket = await client.preheat("docker.io/library/app:1", count=0, zone="z1")
    assert set(ticket.targets) == {"n1", "n2"}
    for name in ticket.targets:
        orders = client.tasks(name)
        order = await asyncio.wait_for(anext(orders), 5)
        assert order == PreheatOrder(ticket.task_id, "docker.io/library/app:1")
        await orders.aclose()
        await client.report_task(name, ticket.task_id, ok=name == "n1", message="disk full")
    progress = await client.preheat_status(ticket.task_id)
    assert progress.finished
    assert {t.node_id: t.state for t in progress.targets} == {
        "n1": TaskState.DONE,
        "n2": TaskState.FAILED,
    }
    with pytest.raises(NoTargets):
        await client.preheat("app:1", zone="nowhere")
    with pytest.raises(TaskUnknown):
        await client.preheat_status("preheat-404")


async def test_a_holder_hears_over_its_tasks_stream_to_check_a_chunk_whose_pieces_failed(
    client: TrackerClient,
) -> None:
    await client.join(node("n1"), "i")
    await client.join(node("n2"), "i")
    await client.locate("n1", D, SIZE, CHUNKS, max_leases=1)
    await client.publish("n1", D, SIZE, CHUNKS, 0, b"meta0")
    await client.locate("n2", D, SIZE, CHUNKS, chunks=[0], failed=[0])
    orders = client.tasks("n1")
    order = await asyncio.wait_for(anext(orders), 5)
    await orders.aclose()
    assert isinstance(order, CheckOrder)
    assert (order.digest, order.size, order.chunk_count, order.chunks) == (D, SIZE, CHUNKS, (0,))


async def test_resolve_a_seeded_ref(client: TrackerClient) -> None:
    await client.join(node("n1"), "i")
    await client.announce("n1", [], [SeededRef("docker.io/library/app:1", D)])
    (resolution,) = await client.resolve("docker.io/library/app:1")
    assert (resolution.digest, resolution.holders) == (D, 1)
    assert resolution.nodes[0].registry == "127.0.0.1:8001"


async def test_unknown_nodes_and_malformed_requests_are_rejected(client: TrackerClient) -> None:
    with pytest.raises(NodeUnknown):
        await client.heartbeat("ghost")
    await client.join(node("n1"), "i")
    with pytest.raises(InvalidArgument):
        await client.locate("n1", "sha256:not-hex!", SIZE, CHUNKS)
    with pytest.raises(InvalidArgument):
        await client.locate("n1", D, SIZE, 0)
    with pytest.raises(InvalidArgument):
        await client.announce("n1", [HeldBlob(D, SIZE, CHUNKS, (9,))])
    with pytest.raises(InvalidArgument):
        await client.join(NodeAddress("n9", "nowhere", "127.0.0.1:1"), "i")
    assert (await client.status()).nodes[0].id == "n1", "the tracker survived"


async def test_oversized_lists_are_refused_without_harm(tracker: TrackerServer) -> None:
    async with grpc.aio.insecure_channel(tracker.address) as channel:
        stub = tracker_pb2_grpc.TrackerStub(channel)
        await stub.Join(
            pb.JoinRequest(node=pb.NodeAddress(node_id="n1", registry="h:1", peer="h:2"))
        )
        many = [
            pb.HeldBlob(digest=f"sha256:{i:064x}", size=10, chunk_count=1) for i in range(10_001)
        ]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Announce(pb.AnnounceRequest(node_id="n1", blobs=many))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        chunks = pb.LocateRequest(
            node_id="n1", digest=D, size=SIZE, chunk_count=CHUNKS, chunks=[1 << 30]
        )
        with pytest.raises(grpc.aio.AioRpcError) as out_of_range:
            await stub.Locate(chunks)
        assert out_of_range.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        huge = pb.PublishRequest(
            node_id="n1", digest=D, size=SIZE, chunk_count=CHUNKS, metainfo=b"x" * (17 << 20)
        )
        with pytest.raises(grpc.aio.AioRpcError) as too_big:
            await stub.Publish(huge)
        assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await tracker.cluster.store.blobs.count() == 0


async def test_health_metrics_and_healthz(tracker: TrackerServer, client: TrackerClient) -> None:
    await client.join(node("n1"), "i")
    await client.heartbeat("n1")
    async with grpc.aio.insecure_channel(tracker.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "tracker.v1.Tracker"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{tracker.http_port}/healthz") as r:
            assert r.status == 200
        async with http.get(f"http://127.0.0.1:{tracker.http_port}/metrics") as r:
            text = await r.text()
    assert "distributed_images_tracker_nodes 1.0" in text
    assert "distributed_images_tracker_leases 0.0" in text
    assert 'distributed_images_tracker_rpc_duration_seconds_count{method="Heartbeat"} 1.0' in text


async def test_two_trackers_in_one_process_keep_their_own_metrics() -> None:
    configs = [Config(listen="127.0.0.1:0", http_listen=None) for _ in range(2)]
    async with TrackerServer(configs[0]) as first, TrackerServer(configs[1]) as second:
        assert first.metrics.registry is not second.metrics.registry
        client = TrackerClient(first.address)
        await client.join(node("n1"), "i")
        await client.close()
        for server in (first, second):
            await server.refresh_metrics()
        assert first.metrics.registry.get_sample_value("distributed_images_tracker_nodes") == 1
        assert second.metrics.registry.get_sample_value("distributed_images_tracker_nodes") == 0


async def test_calls_fail_fast_when_no_tracker_listens() -> None:
    async with TrackerServer(Config(listen="127.0.0.1:0", http_listen=None)) as server:
        address = server.address
    client = TrackerClient(address, timeout=3)
    try:
        start = time.monotonic()
        with pytest.raises(TrackerUnavailable):
            await client.heartbeat("n1")
        with pytest.raises(TrackerUnavailable):
            async with client.watch("n1", D, SIZE, CHUNKS):
                pass
        assert time.monotonic() - start < 3, "a call waited for its whole deadline"
    finally:
        await client.close()


async def test_a_bug_in_the_tracker_fails_one_call_not_the_tracker(
    tracker: TrackerServer, client: TrackerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(tracker.cluster, "resolve", broken)
    with pytest.raises(TrackerError, match="Resolve failed"):
        await client.resolve("app:1")
    await client.join(node("n1"), "i")
    assert len((await client.status()).nodes) == 1


async def test_a_replica_stops_though_a_store_call_swallowed_its_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """redis-py may swallow the cancellation of a call in progress (here the replica's beat, as a
    read of Redis's reply would): the replica stops all the same, and does not hang."""
    tracker = TrackerServer(Config(listen="127.0.0.1:0", http_listen=None))
    await tracker.start()
    replicas = tracker.cluster.store.replicas
    beat = replicas.beat
    beating = asyncio.Event()

    async def swallowing_beat(replica: Replica, ttl: float) -> None:
        beating.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.5)
        await beat(replica, ttl)

    monkeypatch.setattr(replicas, "beat", swallowing_beat)
    await asyncio.wait_for(beating.wait(), 5)
    stopping = asyncio.create_task(tracker.stop(grace=0))
    done, _ = await asyncio.wait({stopping}, timeout=10)
    assert done, "the replica never stopped"


async def test_a_stopped_replica_leaves_no_connection_open_on_redis(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica stopping while it serves a Watch: the stream's end (which forgets the watcher
    in the store, here slowly) is done before the store closes, not on a connection the closed
    store opened again, which nothing would close."""
    storage = fresh_storage(request, "redis")
    probe = redis.asyncio.Redis.from_url(storage.store)

    async def connected() -> int:
        gc.collect()  # a connection dropped earlier, not closed, closes now
        return len(await probe.client_list())

    try:
        before = await connected()
        server = TrackerServer(Config(listen="127.0.0.1:0", http_listen=None, storage=storage))
        await server.start()
        client = TrackerClient(server.address, timeout=5)
        await client.join(node("n1"), "inst")
        blobs = server.cluster.store.blobs
        remove_watch = blobs.remove_watch

        async def slow_remove_watch(digest: str, node_id: str, watch: str) -> None:
            await asyncio.sleep(0.3)
            await remove_watch(digest, node_id, watch)

        monkeypatch.setattr(blobs, "remove_watch", slow_remove_watch)
        subscribed = asyncio.Event()

        async def watch() -> None:
            async with client.watch("n1", D, SIZE, CHUNKS) as events:
                subscribed.set()
                async for _ in events:
                    pass

        watching = asyncio.create_task(watch())
        await asyncio.wait_for(subscribed.wait(), 5)
        await server.stop(grace=0)
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await client.close()
        await asyncio.sleep(1)  # whatever the replica still had to do
        assert await connected() == before
    finally:
        await probe.aclose()


async def test_calls_that_wait_while_the_replica_is_held_up_are_answered() -> None:
    """A replica of thousands of nodes whose loop is held up a few seconds (a burst of joins, a
    slow store) has thousands of heartbeats waiting in gRPC, which by default cancels those
    beyond 1,000: the nodes heard CANCELLED, went silent and expired. They wait their turn."""
    server = TrackerServer(Config(listen="127.0.0.1:0", http_listen=None))
    await server.start()
    joined = threading.Event()
    outcomes: list[BaseException | None] = []

    async def beat() -> None:
        client = TrackerClient(server.address, timeout=30)
        await client.join(node("n1"), "inst")
        joined.set()
        await asyncio.sleep(0.5)  # the replica is held up by then
        beats = (client.heartbeat("n1") for _ in range(3000))
        outcomes.extend(await asyncio.gather(*beats, return_exceptions=True))
        await client.close()

    thread = threading.Thread(target=asyncio.run, args=(beat(),))
    thread.start()
    try:
        while not joined.is_set():
            await asyncio.sleep(0.01)
        time.sleep(4)  # the replica's loop, busy
        while thread.is_alive():
            await asyncio.sleep(0.05)
    finally:
        thread.join()
        await server.stop(grace=0)
    assert len(outcomes) == 3000 and [o for o in outcomes if o is not None] == []
