"""Two tracker replicas on one real redis-server serve one cluster of four real nodes on
127.0.0.11-14, pulling from a real upstream (DESIGN section 11): the nodes split between the
replicas and the cluster still fetches each upstream byte once; a replica SIGKILLed mid-pull
costs no pull and no byte twice; Redis restarted empty mid-pull costs no pull either, and the
nodes join again; a lease is granted once however many replicas are asked at once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from node.config import ClusterConfig
from node.membership import Membership
from tests.integration.conftest import P2PImages
from tests.support.cluster import (
    CLI,
    Cluster,
    Received,
    Tracker,
    client,
    correct,
    process_environment,
    pull_image,
    until,
)
from tests.support.images import OciImage
from tests.support.node import Node
from tests.support.process import free_port, http_status, run
from tests.support.redisserver import RedisServer
from tests.support.registry import Registry, upstream_blob_bytes
from tracker.client import Directive, Inventory, NodeAddress, Placement, TrackerClient
from tracker.credentials import Role
from tracker.errors import TrackerError

pytestmark = pytest.mark.integration

FALLBACKS = "distributed_images_fallbacks_total"
LOCATES = "distributed_images_tracker_rpc_duration_seconds_count"
FAILOVERS = "distributed_images_tracker_failover_seconds_count"
MOVED = "moved to another tracker replica"
KEEPALIVE_SECONDS = 20.0  # the tracker client's gRPC keepalive time (tracker.client)
PULL_TIMEOUT = 180.0
D = "sha256:" + "7" * 64


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    """The session's redis-server, emptied."""
    redis_server.flush()
    return redis_server


async def pull_everywhere(
    cluster: Cluster,
    image: OciImage,
    midway: Callable[[], None] | None = None,
    reference: str = P2PImages.BIG,
) -> list[dict[str, Received]]:
    """Every node pulls `reference` (`image`) at once; `midway` runs once a third of all the
    bytes the nodes are to receive have arrived."""
    async with client(PULL_TIMEOUT) as session:
        progress: list[dict[str, int]] = [{} for _ in cluster.nodes]
        pulls = [
            asyncio.create_task(pull_image(session, node, reference, progress[i]))
            for i, node in enumerate(cluster.nodes)
        ]
        if midway is not None:
            total = image.image().blob_bytes * len(cluster.nodes)

            def a_third() -> bool:
                return sum(sum(p.values()) for p in progress) >= total / 3

            await until(a_third, "a third of the bytes arrived", 0.02)
            assert not all(pull.done() for pull in pulls), "the pulls ended before the event"
            midway()
        return [(await pull).blobs for pull in pulls]


def held(cluster: Cluster, tracker: int) -> dict[str, object]:
    status = cluster.trackers[tracker].status()
    nodes = status["nodes"]
    assert isinstance(nodes, list)
    return {node["registry"]: node["blobs"] for node in nodes}


async def test_nodes_split_over_two_replicas_fetch_each_upstream_byte_once(
    start_cluster: Callable[..., Cluster],
    redis: RedisServer,
    p2p_upstream: Registry,
    p2p_images: P2PImages,
) -> None:
    cluster = start_cluster(size=4, replicas=2, store=redis.url)
    image = p2p_images.big.image()
    mark = p2p_upstream.mark()
    assert await pull_everywhere(cluster, p2p_images.big) == [correct(p2p_images.big)] * 4
    assert await upstream_blob_bytes(p2p_upstream, mark, list(image.blobs)) == image.blobs
    # Both replicas placed chunks (the nodes are split between them), and the cluster they show
    # is the same: every node holds every blob, whichever replica is asked.
    for tracker in cluster.trackers:
        assert tracker.metrics().sum(LOCATES, method="Locate") > 0, tracker.address
    everyone = {node.host: len(image.blobs) for node in cluster.nodes}
    for r in (0, 1):
        await until(lambda r=r: held(cluster, r) == everyone, f"replica {r} shows every blob")
    # `distributed-images status` against either replica names both live replicas, and which
    # of them answered.
    answered = set()
    for tracker in cluster.trackers:
        status = tracker.status()
        replicas = status["replicas"]
        assert isinstance(replicas, list)
        assert sorted(r["address"] for r in replicas) == sorted(t.address for t in cluster.trackers)
        assert status["replica"] in {r["instance"] for r in replicas}
        answered.add(status["replica"])
    assert len(answered) == 2, "both answers came from one replica"
    for node in cluster.nodes:
        assert node.metric(FALLBACKS) == 0, node.name


async def test_a_replica_killed_mid_pull_costs_no_pull_and_no_byte_twice(
    start_cluster: Callable[..., Cluster],
    redis: RedisServer,
    p2p_upstream: Registry,
    p2p_images: P2PImages,
) -> None:
    cluster = start_cluster(size=4, replicas=2, store=redis.url)
    image = p2p_images.big.image()
    mark = p2p_upstream.mark()
    pulled = await pull_everywhere(cluster, p2p_images.big, cluster.trackers[0].kill)
    assert pulled == [correct(p2p_images.big)] * 4
    assert await upstream_blob_bytes(p2p_upstream, mark, list(image.blobs)) == image.blobs
    for node in cluster.nodes:
        assert node.metric(FALLBACKS) == 0, node.name
    # Nodes 0 and 2 knew the killed replica first: each says it moved to the other, its calls
    # answered and its task stream and watches open there. (A call past its deadline on a
    # loaded machine moves a node too, so nodes 1 and 3 may have moved, and back.)
    survivor = cluster.trackers[1]
    for node in cluster.nodes[0::2]:
        await until(lambda n=node: n.metric(FAILOVERS) >= 1, f"{node.name} moved")
        moves = [line for line in node.log_path.read_text().splitlines() if MOVED in line]
        assert f"tracker={survivor.address}" in moves[0], moves
    # The survivor sees every node live and, once the killed one's record lapsed, itself the only
    # live replica.
    await until(lambda: len(survivor.status()["replicas"]) == 1, "the killed replica lapsed")  # type: ignore[arg-type]
    status = survivor.status()
    nodes = status["nodes"]
    assert isinstance(nodes, list) and len(nodes) == 4
    assert all(n["seconds_since_heartbeat"] < 5 for n in nodes)


async def test_redis_restarted_empty_mid_pull_costs_no_pull_and_the_nodes_join_again(
    start_cluster: Callable[..., Cluster],
    redis: RedisServer,
    p2p_images: P2PImages,
) -> None:
    cluster = start_cluster(size=4, replicas=2, store=redis.url)
    image = p2p_images.big.image()
    pulled = await pull_everywhere(cluster, p2p_images.big, redis.restart)
    assert pulled == [correct(p2p_images.big)] * 4
    # The state is rebuilt from the nodes: each joined again and announced what it holds.
    everyone = dict.fromkeys(image.blobs, len(cluster.nodes))
    await until(lambda: cluster.holders(image.blobs) == everyone, "every node announced again")
    for node in cluster.nodes:
        assert node.log_path.read_text().count("joined the cluster") >= 2, node.name


async def test_a_lease_race_through_both_replicas_grants_one_lease(
    start_cluster: Callable[..., Cluster], redis: RedisServer
) -> None:
    """Forty nodes, each on a channel of its own, half through each replica, ask at once for one
    cold chunk: one is told to fetch it, all are told the same holder, and the cluster's
    upstream slots count one lease. A grant that reads, then writes (two racers both see the
    chunk free) shows as slots taken by leases that were overwritten. The racers never
    heartbeat: the replicas keep them for the test however slow the machine is."""
    cluster = start_cluster(size=1, replicas=2, store=redis.url, tracker_args=["--node-ttl", "600"])
    racers = [f"racer-{i}" for i in range(40)]
    clients = [
        TrackerClient(
            cluster.trackers[i % 2].address,
            credential=cluster.tracker.credential(Role.NODE, n),
            timeout=30,
        )
        for i, n in enumerate(racers)
    ]
    try:
        await asyncio.gather(
            *(
                c.join(NodeAddress(n, f"127.0.1.{i}:8080", f"127.0.1.{i}:6881"), "i")
                for i, (n, c) in enumerate(zip(racers, clients, strict=True))
            )
        )
        placements = await asyncio.gather(
            *(
                c.locate(n, D, 4 << 20, 1, max_leases=1)
                for n, c in zip(racers, clients, strict=True)
            )
        )
        fetchers = [
            n
            for n, placement in zip(racers, placements, strict=True)
            if placement.chunks[0].directive is Directive.FETCH
        ]
        assert len(fetchers) == 1, fetchers
        # Everyone is told the same holder, whichever replica it asked.
        assert {p.chunks[0].lease_holder for p in placements} == set(fetchers)
        assert cluster.tracker.status()["totals"]["leases"] == 1  # type: ignore[index]
        # And the one lease took one of the cluster's three upstream slots, not one per racer
        # that was told the chunk was free: a racer's own cold blob gets the two slots left,
        # through either replica.
        for i, c in enumerate(clients[:2]):
            other = "sha256:" + str(i) * 64
            placement = await c.locate(racers[i], other, 16 << 20, 4, max_leases=4)
            granted = [c.index for c in placement.chunks if c.directive is Directive.FETCH]
            assert granted == ([0, 1] if i == 0 else []), (i, granted)
        assert cluster.tracker.status()["totals"]["leases"] == 3  # type: ignore[index]
    finally:
        for c in clients:
            await c.close()


@contextlib.contextmanager
def two_replicas(workdir: Path, redis: RedisServer) -> Iterator[list[Tracker]]:
    """Two tracker replicas on `redis`, sharing one secret, with no node of their own."""
    first = Tracker(workdir / "tracker0", extra_args=["--store", redis.url])
    second = Tracker(
        workdir / "tracker1",
        extra_args=["--store", redis.url],
        name="tracker1",
        secret=first.secret,
    )
    try:
        for tracker in (first, second):
            tracker.start()
        yield [first, second]
    finally:
        for tracker in (first, second):
            tracker.stop()


async def first_swarm(events: AsyncIterator[Placement]) -> set[str]:
    """The peers of chunk 0 in the first event that says to swarm it."""
    async for placement in events:
        for chunk in placement.chunks:
            if chunk.index == 0 and chunk.directive is Directive.SWARM:
                return {peer.node_id for peer in chunk.peers}
    raise AssertionError("the watch ended")


@contextlib.asynccontextmanager
async def watcher_and_publisher(
    first: Tracker, second: Tracker, timeout: float
) -> AsyncIterator[tuple[TrackerClient, TrackerClient, list[float]]]:
    """Two joined nodes: a watcher knowing both replicas (the first first), whose moves are
    recorded in the list, and a publisher knowing only the second."""
    watcher = TrackerClient(
        f"{first.address},{second.address}",
        credential=first.credential(Role.NODE, "watcher"),
        timeout=timeout,
    )
    publisher = TrackerClient(
        second.address, credential=first.credential(Role.NODE, "publisher"), timeout=30
    )
    moves: list[float] = []
    watcher.attachment.report = moves.append
    try:
        await watcher.join(NodeAddress("watcher", "127.0.1.1:8080", "127.0.1.1:6881"), "i")
        await publisher.join(NodeAddress("publisher", "127.0.1.2:8080", "127.0.1.2:6881"), "i")
        yield watcher, publisher, moves
    finally:
        await watcher.close()
        await publisher.close()


async def test_a_watch_on_a_killed_replica_moves_and_misses_no_publication(
    workdir: Path, redis: RedisServer
) -> None:
    """A client that knows both replicas watches a blob through the first; the first is
    SIGKILLed, then a chunk is leased and published through the second: the publication reaches
    the watcher over its watch alone (it never asks), and the client says it moved."""
    with two_replicas(workdir, redis) as (first, second):
        async with watcher_and_publisher(first, second, 30) as (watcher, publisher, moves):
            async with watcher.watch("watcher", D, 4 << 20, 1) as events:
                assert watcher.target == first.address
                first.kill()
                placement = await publisher.locate("publisher", D, 4 << 20, 1, max_leases=1)
                assert placement.chunks[0].directive is Directive.FETCH
                await publisher.publish("publisher", D, 4 << 20, 1, 0, b"metainfo")
                peers = await asyncio.wait_for(first_swarm(events), PULL_TIMEOUT)
            assert peers == {"publisher"}
            assert watcher.target == second.address
            assert moves == [], "moved before the new replica answered a call"
            await watcher.heartbeat("watcher")
            assert len(moves) == 1


async def test_a_watch_moves_with_its_client_off_a_replica_that_hangs(
    workdir: Path, redis: RedisServer
) -> None:
    """The first replica is frozen (SIGSTOP): like a hung process or a host gone from the
    network, it closes no connection, so the watch open there breaks only when gRPC keepalive
    gives up on it (a ping unanswered 20 s after the last, then 10 s). A call that times out
    there moves the client to the second replica, and the watch moves with it at once: a
    publication made through the second reaches the watcher while the first is still frozen,
    well before keepalive could have noticed (the bound is that mechanism's, not a speed)."""
    with two_replicas(workdir, redis) as (first, second):
        async with watcher_and_publisher(first, second, 2) as (watcher, publisher, moves):
            async with watcher.watch("watcher", D, 4 << 20, 1) as events:
                first.signal(signal.SIGSTOP)
                try:
                    with pytest.raises(TrackerError):
                        await watcher.heartbeat("watcher")  # past its deadline: the client moves
                    await watcher.heartbeat("watcher")
                    assert watcher.target == second.address
                    await publisher.locate("publisher", D, 4 << 20, 1, max_leases=1)
                    await publisher.publish("publisher", D, 4 << 20, 1, 0, b"metainfo")
                    peers = await asyncio.wait_for(first_swarm(events), KEEPALIVE_SECONDS / 2)
                finally:
                    first.signal(signal.SIGCONT)
            assert peers == {"publisher"}
            assert len(moves) == 1


async def test_members_whose_replica_died_take_orders_from_the_other(
    workdir: Path, redis: RedisServer
) -> None:
    """Four nodes' memberships, two knowing each replica first; the first replica is SIGKILLed.
    Those two move to the other and say so: a preheat made through the survivor after the kill
    reaches all four over their task streams."""
    with two_replicas(workdir, redis) as trackers:
        addresses = [t.address for t in trackers]
        moved: list[list[float]] = [[] for _ in range(4)]
        preheated: list[str] = []

        async def preheat(image: str) -> None:
            preheated.append(image)

        async def inventory() -> Inventory:
            return Inventory(())

        memberships = []
        for i in range(4):
            config = ClusterConfig(
                tracker=",".join(addresses[i % 2 :] + addresses[: i % 2]),
                credential_file=trackers[0].credential_file(f"member{i}"),
                peer_listen=f"127.0.0.1:{7300 + i}",
            )
            registry = f"127.0.0.1:{8300 + i}"
            member = Membership(config, registry, inventory, preheat=preheat, moved=moved[i].append)
            memberships.append(member)
        running = [asyncio.create_task(m.run()) for m in memberships]
        try:
            await until(lambda: all(m.joins for m in memberships), "every member joined")
            trackers[0].kill()
            argv = [*CLI, "preheat", "--tracker", trackers[1].address, "--wait", "app:1"]
            argv += ["--credential-file", str(trackers[1].operator_file)]
            result = await asyncio.to_thread(run, argv, env=process_environment())
            assert "4 done, 0 failed" in result.stdout, result.stdout
            assert len(preheated) == 4, preheated
            await until(lambda: all(moved[0::2]), "members 0 and 2 moved")
            assert all(m.client.target == trackers[1].address for m in memberships)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)


async def test_with_redis_unreachable_the_replicas_send_every_pull_upstream_at_once(
    start_cluster: Callable[..., Cluster],
    workdir: Path,
    p2p_upstream: Registry,
    p2p_images: P2PImages,
) -> None:
    """Redis stopped: both replicas answer every call "store unreachable" at once (not after the
    caller's deadline), so each node pulls straight from the upstream; Redis back, empty: the
    nodes join again and swarm, each upstream byte fetched once."""
    redis = RedisServer(workdir / "own-redis")
    redis.start()
    try:
        cluster = start_cluster(size=4, replicas=2, store=redis.url)
        redis.stop()
        for tracker in cluster.trackers:
            await until(lambda t=tracker: http_status(f"{t.http_url}/readyz") == 503, "not ready")
        small = p2p_images.small
        pulled = await pull_everywhere(cluster, small, reference=P2PImages.SMALL)
        assert pulled == [correct(small)] * 4
        for node in cluster.nodes:
            assert node.metric(FALLBACKS) >= 1, node.name
            assert "store is unreachable" in node.log_path.read_text(), node.name
        # Each replica said so once, not with a traceback every sweep (as it used to).
        for tracker in cluster.trackers:
            log = tracker.log_path.read_text()
            assert log.count("the store is unreachable") == 1, tracker.log_tail()
            assert "Traceback" not in log, tracker.log_tail()
        redis.start()
        await until(
            lambda: all(
                n.log_path.read_text().count("joined the cluster") >= 2 for n in cluster.nodes
            ),
            "every node joined again",
        )
        back = ("the store is reachable again", "the store's state started afresh")
        for tracker in cluster.trackers:
            await until(
                lambda t=tracker: any(line in t.log_path.read_text() for line in back),
                "each replica says its store is back",
            )
        fallbacks = [node.metric(FALLBACKS) for node in cluster.nodes]
        image = p2p_images.big.image()
        mark = p2p_upstream.mark()
        assert await pull_everywhere(cluster, p2p_images.big) == [correct(p2p_images.big)] * 4
        assert await upstream_blob_bytes(p2p_upstream, mark, list(image.blobs)) == image.blobs
        assert [node.metric(FALLBACKS) for node in cluster.nodes] == fallbacks
    finally:
        redis.stop()


async def test_a_node_given_one_name_for_two_replicas_moves_to_the_other(
    workdir: Path,
    redis: RedisServer,
    p2p_upstream: Registry,
    p2p_images: P2PImages,
) -> None:
    """`--tracker trackers.test:PORT`, a name with two addresses (as a headless Service has; here
    from a hosts file the node alone sees, in a mount namespace of its own): the node joins one
    replica, and when that one is SIGKILLed it moves to the other, which then places its pull."""
    hosts = ("127.0.0.31", "127.0.0.32")
    port = free_port(hosts[0])
    first = Tracker(
        workdir / "tracker0", host=hosts[0], port=port, extra_args=["--store", redis.url]
    )
    trackers = [
        first,
        Tracker(
            workdir / "tracker1",
            host=hosts[1],
            port=port,
            extra_args=["--store", redis.url],
            name="tracker1",
            secret=first.secret,
        ),
    ]
    names = workdir / "hosts"
    names.write_text(f"127.0.0.1 localhost\n{hosts[0]} trackers.test\n{hosts[1]} trackers.test\n")
    mount = 'mount --bind "$0" /etc/hosts && exec "$@"'
    node = Node(
        workdir / "node0",
        {p2p_upstream.host: p2p_upstream.url},
        p2p_upstream.host,
        extra_args=[
            "--tracker",
            f"trackers.test:{port}",
            "--credential-file",
            str(first.credential_file("node0")),
        ],
        name="node0",
        host="127.0.0.11",
        wrapper=["unshare", "--mount", "sh", "-c", mount, str(names)],
    )
    try:
        for tracker in trackers:
            tracker.start()
        node.start()
        await until(lambda: "joined the cluster" in node.log_path.read_text(), "node joined")
        joins = [t.metrics().sum(LOCATES, method="Join") for t in trackers]
        assert sorted(joins) == [0, 1], joins
        used, other = (trackers[0], trackers[1]) if joins[0] else (trackers[1], trackers[0])
        # Only the replica it joined heard from the node; after the kill, the other does.
        assert other.metrics().sum(LOCATES, method="Heartbeat") == 0
        used.kill()
        await until(
            lambda: other.metrics().sum(LOCATES, method="Heartbeat") > 0,
            "the node heartbeats on the other replica",
        )
        nodes = other.status()["nodes"]
        assert isinstance(nodes, list) and [n["registry"] for n in nodes] == [node.host]
        image = p2p_images.small.image()
        mark = p2p_upstream.mark()
        async with client(PULL_TIMEOUT) as session:
            pulled = await pull_image(session, node, P2PImages.SMALL)
        assert pulled.blobs == correct(p2p_images.small)
        assert await upstream_blob_bytes(p2p_upstream, mark, list(image.blobs)) == image.blobs
        assert node.metric(FALLBACKS) == 0
        assert other.metrics().sum(LOCATES, method="Locate") > 0
    finally:
        node.stop()
        for tracker in trackers:
            tracker.stop()
