"""The tracker client's streams against replicas that open them and drop them at once (as a
replica stopping, or cut off from its store, does): each replica is tried, and once the stream
broke more times than there are replicas it gives up with TrackerUnavailable instead of going
round them forever. The replicas are fakes of
the gRPC service, served on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from tracker.client import CheckOrder, PreheatOrder, RepublishOrder, TrackerClient, _order
from tracker.errors import TrackerUnavailable
from tracker.v1 import tracker_pb2 as pb
from tracker.v1 import tracker_pb2_grpc


class Flapping(tracker_pb2_grpc.TrackerServicer):
    """Confirms every stream open, then drops it."""

    def __init__(self) -> None:
        self.opened = 0

    async def Watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchEvent]:
        self.opened += 1
        yield pb.WatchEvent(subscribed=True)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "replica stopping")

    async def Tasks(
        self, request: pb.TasksRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Task]:
        self.opened += 1
        await context.send_initial_metadata(())
        await context.abort(grpc.StatusCode.UNAVAILABLE, "replica stopping")
        yield pb.Task()  # never reached: makes this a stream handler


def gave_up(fakes: list[Flapping]) -> bool:
    """Every replica was tried, and the stream was opened a bounded number of times: once
    more than the replicas, or twice that when the machine was slow enough that an open
    outlasted the call timeout and counted as a stream that had lasted."""
    opened = [fake.opened for fake in fakes]
    return min(opened) >= 1 and sum(opened) <= 2 * (len(fakes) + 1)


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[list[Flapping], str]]:
    fakes = [Flapping(), Flapping()]
    servers, addresses = [], []
    for fake in fakes:
        server = grpc.aio.server()
        tracker_pb2_grpc.add_TrackerServicer_to_server(fake, server)  # type: ignore[no-untyped-call]
        addresses.append(f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
        await server.start()
        servers.append(server)
    yield fakes, ",".join(addresses)
    for server in servers:
        await server.stop(grace=None)


async def test_a_watch_dropped_by_every_replica_gives_up(
    replicas: tuple[list[Flapping], str],
) -> None:
    fakes, address = replicas
    client = TrackerClient(address, timeout=5)
    try:
        async with client.watch("n", "sha256:" + "a" * 64, 1, 1) as events:
            with pytest.raises(TrackerUnavailable):
                async for _ in events:
                    pass
    finally:
        await client.close()
    assert gave_up(fakes)


async def test_a_task_stream_dropped_by_every_replica_gives_up(
    replicas: tuple[list[Flapping], str],
) -> None:
    fakes, address = replicas
    client = TrackerClient(address, timeout=5)
    try:
        with pytest.raises(TrackerUnavailable):
            async for _ in client.tasks("n"):
                pass
    finally:
        await client.close()
    assert gave_up(fakes)


def test_each_kind_of_task_is_its_order_and_an_unknown_kind_none() -> None:
    """A newer tracker's kind of task is passed over, not taken for a preheat of nothing."""
    chunks = pb.ChunksTask(digest="sha256:" + "a" * 64, size=9, chunk_count=2, chunks=[1])
    tasks = [
        pb.Task(task_id="p", preheat=pb.PreheatTask(image="app:1")),
        pb.Task(task_id="r", republish=chunks),
        pb.Task(task_id="c", check=chunks),
        pb.Task(task_id="x"),
    ]
    assert [_order(task) for task in tasks] == [
        PreheatOrder("p", "app:1"),
        RepublishOrder("r", "sha256:" + "a" * 64, 9, 2, (1,)),
        CheckOrder("c", "sha256:" + "a" * 64, 9, 2, (1,)),
        None,
    ]
