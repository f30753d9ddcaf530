"""Real `distributed-images node` processes joining a real `distributed-images tracker`."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.test_tracker_process import TrackerProcess
from tests.support.node import Node
from tracker.client import ClusterStatus, TrackerClient
from tracker.errors import TrackerError, Unauthenticated

pytestmark = pytest.mark.integration

# Membership needs no upstream: the nodes point at a registry nobody will ask.
NOWHERE = {"127.0.0.1:9": "http://127.0.0.1:9"}


@pytest.fixture
def tracker_process(workdir: Path) -> Iterator[TrackerProcess]:
    process = TrackerProcess(workdir / "tracker")
    asyncio.run(process.start())
    yield process
    process.daemon.stop()


@pytest.fixture
def start_node(node_command: None, workdir: Path) -> Iterator[Callable[..., Node]]:
    started: list[Node] = []

    def start(*extra_args: str) -> Node:
        node = Node(
            workdir / f"node{len(started)}",
            NOWHERE,
            "127.0.0.1:9",
            extra_args=extra_args,
            name=f"node{len(started)}",
        )
        started.append(node)
        node.start()
        return node

    yield start
    for node in started:
        node.stop()
        print(node.log_tail())  # pytest shows it only when the test failed


def status(tracker: str) -> ClusterStatus | None:
    async def ask() -> ClusterStatus | None:
        client = TrackerClient(tracker, timeout=2)
        try:
            return await client.status()
        except TrackerError:
            return None
        finally:
            await client.close()

    return asyncio.run(ask())


def wait_for_nodes(tracker: str, expected: set[str], timeout: float = 20.0) -> ClusterStatus:
    deadline = time.monotonic() + timeout
    while True:
        seen = status(tracker)
        if seen is not None and {n.registry for n in seen.nodes} == expected:
            return seen
        assert time.monotonic() < deadline, f"tracker shows {seen}, expected {expected}"
        time.sleep(0.1)


def test_nodes_join_a_tracker_and_rejoin_after_it_restarts(
    tracker_process: TrackerProcess, start_node: Callable[..., Node]
) -> None:
    nodes = [start_node("--tracker", tracker_process.address) for _ in range(3)]
    registries = {n.host for n in nodes}
    seen = wait_for_nodes(tracker_process.address, registries)
    peers = {n.registry: n.peer for n in seen.nodes}
    assert all(peers[n.host] == f"127.0.0.1:{n.peer_port}" for n in nodes)

    tracker_process.daemon.kill()
    asyncio.run(tracker_process.start())
    wait_for_nodes(tracker_process.address, registries)

    nodes[0].stop()  # a node that stops leaves at once, well before its TTL
    wait_for_nodes(tracker_process.address, registries - {nodes[0].host}, timeout=1.5)


def test_a_node_without_a_tracker_embeds_one_that_only_it_may_call(
    start_node: Callable[..., Node],
) -> None:
    node = start_node()
    pattern = re.compile(r"embedded tracker started\" tracker=(127\.0\.0\.1:\d+)")
    deadline = time.monotonic() + 10
    while not (found := pattern.search(node.log_tail(200))) or "joined the cluster" not in (
        node.log_tail(200)
    ):
        assert time.monotonic() < deadline, "the node never joined an embedded tracker"
        time.sleep(0.05)

    async def outsider_asks() -> None:
        client = TrackerClient(found.group(1), timeout=2)
        try:
            await client.status()
        finally:
            await client.close()

    with pytest.raises(Unauthenticated):
        asyncio.run(outsider_asks())
