"""Leases and fan-out under concurrency: many simulated nodes on real gRPC against one tracker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from tests.support.stores import STORES, fresh_storage
from tracker.app import Config, TrackerServer
from tracker.client import Directive, NodeAddress, Placement, TrackerClient
from tracker.cluster import Policy
from tracker.errors import NodeUnknown

D = "sha256:" + "d" * 64
SIZE, CHUNKS = 1 << 30, 64
LEASE_TTL = 2.0
# A loaded machine may take seconds to answer eighty calls at once; how fast is no part of what
# these tests check (a call past its deadline fails the test for the machine's sake).
DEADLINE = 60.0


@pytest.fixture
def lease_ttl() -> float:
    """The tracker's lease TTL; a test may set it with `pytest.mark.parametrize`."""
    return LEASE_TTL


@pytest.fixture(params=STORES)
async def tracker(request: pytest.FixtureRequest, lease_ttl: float) -> AsyncIterator[TrackerServer]:
    policy = Policy(
        heartbeat_interval=1.0,
        node_ttl=30.0,
        lease_ttl=lease_ttl,
        max_leases=4,
        blob_leases=CHUNKS,
        upstream_leases=CHUNKS,
    )
    storage = fresh_storage(request, request.param)
    config = Config(listen="127.0.0.1:0", http_listen=None, policy=policy, storage=storage)
    async with TrackerServer(config) as s:
        yield s


@pytest.fixture
async def clients(tracker: TrackerServer) -> AsyncIterator[list[TrackerClient]]:
    """A few channels shared by the simulated nodes, as many nodes per connection as it takes."""
    made = [TrackerClient(tracker.address, timeout=DEADLINE) for _ in range(6)]
    yield made
    for client in made:
        await client.close()


def address(i: int) -> NodeAddress:
    return NodeAddress(f"node-{i}", f"127.0.0.{1 + i % 200}:8080", f"127.0.0.{1 + i % 200}:6881")


async def join_all(clients: list[TrackerClient], count: int) -> list[tuple[str, TrackerClient]]:
    nodes = [(f"node-{i}", clients[i % len(clients)]) for i in range(count)]
    await asyncio.gather(*(c.join(address(i), "i") for i, (_, c) in enumerate(nodes)))
    return nodes


async def lease_holder(tracker: TrackerServer, chunk: int) -> str | None:
    lease = await tracker.cluster.store.leases.get(D, chunk)
    return None if lease is None else lease.holder


def fetchers(placements: list[tuple[str, Placement]]) -> dict[int, list[str]]:
    granted: dict[int, list[str]] = {}
    for node_id, placement in placements:
        for chunk in placement.chunks:
            if chunk.directive is Directive.FETCH:
                granted.setdefault(chunk.index, []).append(node_id)
    return granted


# No lease lapses while this test runs, however slowly the machine lets it: it checks who is
# granted what at once. A lease that lapsed is granted again to another node, rightly, and two
# nodes would have been told to fetch one chunk one after the other (on a busy machine, the
# first round alone outlasted a 2 s TTL); lapses have tests of their own below.
@pytest.mark.parametrize("lease_ttl", [600.0], ids=["no-lapse"])
async def test_concurrent_requesters_never_share_a_lease(
    tracker: TrackerServer, clients: list[TrackerClient]
) -> None:
    nodes = await join_all(clients, 60)

    async def locate(node_id: str, client: TrackerClient) -> tuple[str, Placement]:
        return node_id, await client.locate(node_id, D, SIZE, CHUNKS, max_leases=4)

    first = await asyncio.gather(*(locate(n, c) for n, c in nodes))
    granted = fetchers(first)
    assert sorted(granted) == list(range(CHUNKS)), "every cold chunk gets a fetcher"
    assert all(len(holders) == 1 for holders in granted.values()), granted
    holder = {chunk: holders[0] for chunk, holders in granted.items()}
    for _, placement in first:
        for chunk in placement.chunks:
            assert chunk.lease_holder in (None, holder[chunk.index])

    # Churn: a third of the nodes leave and join again while everyone asks again.
    async def churn(i: int) -> None:
        node_id, client = nodes[i]
        await client.leave(node_id)
        await client.join(address(i), "i")

    async def locate_unless_gone(node_id: str, client: TrackerClient) -> tuple[str, Placement]:
        with contextlib.suppress(NodeUnknown):  # it is between leaving and joining again
            return await locate(node_id, client)
        return node_id, Placement(D, CHUNKS, ())

    tasks = [locate_unless_gone(n, c) for n, c in nodes] + [churn(i) for i in range(0, 60, 3)]
    results = await asyncio.gather(*tasks)
    second = [r for r in results if r is not None]
    # A node that left lost its leases, so its chunks may have moved on; nobody else's can have.
    churned = {nodes[i][0] for i in range(0, 60, 3)}
    for chunk, holders in fetchers(second).items():
        steady = [h for h in holders if h not in churned]
        assert len(steady) <= 1, (chunk, holders)
        if steady:
            assert await lease_holder(tracker, chunk) == steady[0]
    leases = await tracker.cluster.store.leases.all()
    assert len({lease.key for lease in leases}) == len(leases)
    members = {node.id for node in await tracker.cluster.store.members.all()}
    assert all(lease.holder in members for lease in leases)


async def renew_until_cancelled(client: TrackerClient, node_id: str, chunk: int) -> None:
    progress = 0
    while True:
        progress += 1 << 20
        assert await client.renew_lease(node_id, D, chunk, progress)
        await asyncio.sleep(LEASE_TTL / 5)


async def next_fetch(events: AsyncIterator[Placement], chunk: int) -> float:
    async for placement in events:
        for c in placement.chunks:
            if c.index == chunk and c.directive is Directive.FETCH:
                return time.monotonic()
    raise AssertionError("the watch ended")


async def test_a_killed_holders_lease_moves_within_the_lease_ttl(
    tracker: TrackerServer, clients: list[TrackerClient]
) -> None:
    (holder, holder_client), (waiter, waiter_client) = await join_all(clients, 2)
    placement = await holder_client.locate(holder, D, SIZE, CHUNKS, max_leases=1)
    assert placement.chunks[0].directive is Directive.FETCH
    renewing = asyncio.create_task(renew_until_cancelled(holder_client, holder, 0))
    async with waiter_client.watch(waiter, D, SIZE, CHUNKS) as events:
        await asyncio.sleep(LEASE_TTL * 1.5)  # longer than a lease: renewals keep it
        assert await lease_holder(tracker, 0) == holder
        renewing.cancel()  # the holder dies: no more renewals, no leave
        killed = time.monotonic()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        moved = await asyncio.wait_for(next_fetch(events, 0), LEASE_TTL * 4)
    # Reassigned no later than one lease TTL after the last renewal (+ the sweeper's period and
    # scheduling slack on a busy machine), and not before the lease ran out.
    assert moved - killed <= LEASE_TTL + 1.5
    assert moved - killed >= LEASE_TTL * 0.5
    assert await lease_holder(tracker, 0) == waiter
    assert not await holder_client.renew_lease(holder, D, 0, 1 << 40)


async def test_a_stalling_holder_loses_its_lease(
    tracker: TrackerServer, clients: list[TrackerClient]
) -> None:
    (holder, holder_client), (waiter, waiter_client) = await join_all(clients, 2)
    await holder_client.locate(holder, D, SIZE, CHUNKS, max_leases=1)
    async with waiter_client.watch(waiter, D, SIZE, CHUNKS) as events:
        stalled = asyncio.create_task(stall(holder_client, holder))
        try:
            await asyncio.wait_for(next_fetch(events, 0), LEASE_TTL * 4)
        finally:
            stalled.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stalled
    assert await lease_holder(tracker, 0) == waiter


async def stall(client: TrackerClient, node_id: str) -> None:
    """Renew forever, reporting the same progress: alive but stuck."""
    while await client.renew_lease(node_id, D, 0, 4096):
        await asyncio.sleep(LEASE_TTL / 5)


async def test_a_leaving_holder_hands_over_at_once(
    tracker: TrackerServer, clients: list[TrackerClient]
) -> None:
    (holder, holder_client), (waiter, waiter_client) = await join_all(clients, 2)
    await holder_client.locate(holder, D, SIZE, CHUNKS, max_leases=1)
    async with waiter_client.watch(waiter, D, SIZE, CHUNKS) as events:
        await holder_client.leave(holder)
        await asyncio.wait_for(next_fetch(events, 0), LEASE_TTL / 2)


async def test_a_published_chunk_is_fanned_out_to_two_requesters(
    tracker: TrackerServer, clients: list[TrackerClient]
) -> None:
    nodes = await join_all(clients, 9)
    source, source_client = nodes[0]
    await source_client.locate(source, D, SIZE, CHUNKS, max_leases=1)
    async with contextlib.AsyncExitStack() as stack:
        streams = {
            node_id: await stack.enter_async_context(client.watch(node_id, D, SIZE, CHUNKS))
            for node_id, client in nodes[1:]
        }
        await source_client.publish(source, D, SIZE, CHUNKS, 0, b"meta0")
        told = await asyncio.gather(*(first_chunk(events, 0) for events in streams.values()))
    given_source = [peers for peers in told if source in peers]
    assert len(given_source) == 2
    relays = {n for n, peers in zip(streams, told, strict=True) if source in peers}
    for node_id, peers in zip(streams, told, strict=True):
        if source not in peers:  # the relays, and the others to trade pieces with
            assert relays <= peers
            assert peers == set(streams) - {node_id}


async def first_chunk(events: AsyncIterator[Placement], chunk: int) -> set[str]:
    async for placement in events:
        for c in placement.chunks:
            if c.index == chunk and c.directive is Directive.SWARM:
                return {p.node_id for p in c.peers}
    raise AssertionError("the watch ended")
