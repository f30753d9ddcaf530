"""The node's membership glue against real trackers in-process: joining, re-joining after a
tracker restart, degrading while the tracker is away, carrying out the tracker's orders."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from node.config import ClusterConfig
from node.membership import Membership
from tracker.app import Config, TrackerServer
from tracker.client import (
    ClusterStatus,
    Directive,
    HeldBlob,
    Inventory,
    NodeAddress,
    SeededRef,
    TaskState,
    TrackerClient,
)
from tracker.cluster import Policy
from tracker.errors import TrackerUnavailable, Unauthenticated

D = "sha256:" + "d" * 64
E = "sha256:" + "e" * 64
POLICY = Policy(heartbeat_interval=0.1, node_ttl=5.0, lease_ttl=1.0)


SEEDERS = [f"127.0.0.1:{8100 + i}" for i in range(8)]  # every FakeNode's id


def tracker_config(port: int = 0) -> Config:
    return Config(listen=f"127.0.0.1:{port}", http_listen=None, seeder=SEEDERS, policy=POLICY)


class FakeNode:
    """What the node's composition root hands to Membership: its inventory, and hooks."""

    def __init__(self, index: int, tracker: str | None, blobs: list[HeldBlob]) -> None:
        self.blobs = blobs
        self.preheated: list[str] = []
        config = ClusterConfig(tracker=tracker, peer_listen=f"127.0.0.1:{7100 + index}")
        self.membership = Membership(
            config,
            f"127.0.0.1:{8100 + index}",
            self.inventory,
            preheat=self.preheat,
            metainfo=self.metainfo,
        )

    async def inventory(self) -> Inventory:
        return Inventory(tuple(self.blobs), (SeededRef("app:1", D),))

    async def preheat(self, image: str) -> None:
        if image == "broken:1":
            raise RuntimeError("manifest unknown")
        self.preheated.append(image)

    async def metainfo(self, digest: str, chunk: int) -> bytes | None:
        return b"meta%d" % chunk


@contextlib.asynccontextmanager
async def running(nodes: list[FakeNode]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(n.membership.run()) for n in nodes]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def status_of(client: TrackerClient) -> ClusterStatus | None:
    try:
        return await client.status()
    except TrackerUnavailable:
        return None


@pytest.fixture
async def tracker() -> AsyncIterator[TrackerServer]:
    server = TrackerServer(tracker_config())
    await server.start()
    yield server
    await server.stop(grace=0)


async def test_a_node_without_a_tracker_runs_one_itself() -> None:
    node = FakeNode(1, None, [HeldBlob(D, 100, 1, (0,))])
    membership = node.membership
    outsider = TrackerClient(membership.tracker_address)
    try:
        async with running([node]):

            async def joined() -> bool:
                if not membership.joined:
                    return False
                resolutions = await membership.client.resolve("app:1", membership.node_id)
                return [r.holders for r in resolutions] == [1]

            await eventually(joined)
            assert membership.tracker_address.startswith("127.0.0.1:")
            with pytest.raises(Unauthenticated):
                await outsider.status()  # only the node itself holds a credential
        with pytest.raises(TrackerUnavailable):
            await outsider.status()  # the embedded tracker stopped with the node
    finally:
        await outsider.close()


async def test_nodes_rejoin_and_reannounce_after_a_tracker_restart() -> None:
    server = TrackerServer(tracker_config())
    await server.start()
    port = server.port
    nodes = [FakeNode(i, server.address, [HeldBlob(D, 100, 1, (0,))]) for i in range(5)]
    client = TrackerClient(server.address)
    try:
        async with running(nodes):

            async def all_joined() -> bool:
                status = await status_of(client)
                return status is not None and sorted(n.blobs for n in status.nodes) == [1] * 5

            await eventually(all_joined)
            first = (await client.status()).tracker_instance
            await server.stop(grace=0)
            server = TrackerServer(tracker_config(port))
            await server.start()
            await eventually(all_joined)
            status = await client.status()
            assert status.tracker_instance != first
            assert all(n.membership.joins >= 2 for n in nodes)
            (resolution,) = await client.resolve("app:1")
            assert resolution.holders == 5
        assert (await client.status()).nodes == (), "nodes leave when they stop"
    finally:
        await client.close()
        await server.stop(grace=0)


async def test_a_node_keeps_going_while_the_tracker_is_away() -> None:
    server = TrackerServer(tracker_config())
    await server.start()
    port = server.port
    node = FakeNode(1, server.address, [HeldBlob(D, 100, 1, (0,))])
    membership = node.membership
    client = TrackerClient(server.address, timeout=3)
    try:
        async with running([node]):
            await eventually(lambda: has_nodes(client, 1))
            await server.stop(grace=0)
            start = time.monotonic()
            with pytest.raises(TrackerUnavailable):
                await membership.client.locate(membership.node_id, E, 100, 1)
            assert time.monotonic() - start < 3, "a call waited for its whole deadline"
            node.blobs.append(HeldBlob(E, 100, 1, (0,)))
            await membership.announce(node.blobs[-1])  # must not raise
            server = TrackerServer(tracker_config(port))
            await server.start()

            async def both_blobs() -> bool:
                status = await status_of(client)
                return status is not None and [n.blobs for n in status.nodes] == [2]

            await eventually(both_blobs)
    finally:
        await client.close()
        await server.stop(grace=0)


async def has_nodes(client: TrackerClient, count: int) -> bool:
    status = await status_of(client)
    return status is not None and len(status.nodes) == count


async def test_announce_reaches_the_tracker(tracker: TrackerServer) -> None:
    node = FakeNode(1, tracker.address, [])
    client = TrackerClient(tracker.address)
    try:
        async with running([node]):
            await eventually(lambda: has_nodes(client, 1))
            await node.membership.announce(HeldBlob(E, 100, 1, (0,)))
            masks = await tracker.cluster.store.peers.masks(node.membership.node_id, E)
            assert masks == (1, 0)
    finally:
        await client.close()


async def test_preheat_orders_are_carried_out_and_reported(tracker: TrackerServer) -> None:
    nodes = [FakeNode(i, tracker.address, []) for i in range(3)]
    client = TrackerClient(tracker.address)
    try:
        async with running(nodes):
            await eventually(lambda: has_nodes(client, 3))
            ok = await client.preheat("app:1", count=2)
            broken = await client.preheat("broken:1", count=1)

            async def finished() -> bool:
                progress = [await client.preheat_status(t.task_id) for t in (ok, broken)]
                return all(p.finished for p in progress)

            await eventually(finished)
            done = await client.preheat_status(ok.task_id)
            assert {t.state for t in done.targets} == {TaskState.DONE}
            assert sum(n.preheated == ["app:1"] for n in nodes) == 2
            (failed,) = (await client.preheat_status(broken.task_id)).targets
            assert failed.state is TaskState.FAILED and "manifest unknown" in failed.message
    finally:
        await client.close()


async def test_lost_metainfo_is_republished_by_a_holder() -> None:
    server = TrackerServer(tracker_config())
    await server.start()
    holder = FakeNode(1, server.address, [HeldBlob(D, 100, 1, (0,))])
    client = TrackerClient(server.address)
    try:
        async with running([holder]):
            await eventually(lambda: has_nodes(client, 1))
            await client.join(NodeAddress("asker", "127.0.0.1:9", "127.0.0.1:10"), "i")
            first = await client.locate("asker", D, 100, 1)
            assert first.chunks[0].directive is Directive.SWARM
            assert first.chunks[0].metainfo is None

            async def published() -> bool:
                placement = await client.locate("asker", D, 100, 1)
                return placement.chunks[0].metainfo == b"meta0"

            await eventually(published)
    finally:
        await client.close()
        await server.stop(grace=0)


def test_the_embedded_tracker_port_is_held_until_used() -> None:
    node = FakeNode(1, None, [])
    port = int(node.membership.tracker_address.rpartition(":")[2])
    try:
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
    finally:
        node.membership._reservation.close()  # type: ignore[union-attr]  # run() would
