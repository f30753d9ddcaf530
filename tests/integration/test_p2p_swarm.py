"""A real tracker and real nodes on 127.0.0.11-14 pulling images through each other (DESIGN
sections 2, 3 and 7): the cluster fetches each upstream byte once and the nodes feed each other;
a seeder killed mid-transfer, a tracker gone or a corrupted chunk never costs a client its pull,
nor gives it a wrong byte."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from node.p2p import metainfo
from node.p2p.session import PeerSession
from node.store.chunking import chunk_count, chunk_name, chunk_range, chunk_size
from tests.integration.conftest import P2PImages
from tests.support import skopeo
from tests.support.cluster import (
    Cluster,
    chunk_file,
    client,
    correct,
    pull_image,
    receiving,
    stored,
    until,
)
from tests.support.images import MiB
from tests.support.node import Node
from tests.support.registry import Registry, upstream_blob_bytes
from tracker.client import Directive, HeldBlob, NodeAddress, TrackerClient
from tracker.credentials import Role

pytestmark = pytest.mark.integration

BLOB_BYTES = "distributed_images_blob_bytes_total"
PEER_BYTES = "distributed_images_peer_bytes_total"
UPSTREAM_BYTES = "distributed_images_upstream_bytes_total"
CHUNKS = "distributed_images_chunk_duration_seconds_count"
FALLBACKS = "distributed_images_fallbacks_total"
SINCE_PEER_SUCCESS = "distributed_images_seconds_since_peer_success"
PULL_TIMEOUT = 120.0
RECOVERY_TIMEOUT = 60.0  # a node TTL (3 s), a stall timeout (10 s) and the transfer, with room


def held_blobs(cluster: Cluster) -> dict[str, object]:
    """Node registry address -> blob count, as `distributed-images status --json` shows them."""
    nodes = cluster.tracker.status()["nodes"]
    assert isinstance(nodes, list)
    return {node["registry"]: node["blobs"] for node in nodes}


async def test_four_nodes_pulling_at_once_fetch_each_upstream_byte_once_and_feed_each_other(
    start_cluster: Callable[..., Cluster],
    p2p_upstream: Registry,
    p2p_images: P2PImages,
    workdir: Path,
) -> None:
    cluster = start_cluster(size=4)
    image = p2p_images.big.image()
    mark = p2p_upstream.mark()
    *http_nodes, skopeo_node = cluster.nodes
    async with client(PULL_TIMEOUT) as session:
        copy = asyncio.to_thread(
            skopeo.pull, skopeo_node.host, P2PImages.BIG, workdir / "skopeo", timeout=PULL_TIMEOUT
        )
        pulls = asyncio.gather(*(pull_image(session, n, P2PImages.BIG) for n in http_nodes))
        pulled, out = await asyncio.gather(pulls, copy)

    assert [(p.manifest, p.blobs) for p in pulled] == [(image.digest, correct(p2p_images.big))] * 3
    assert skopeo.manifest_digest(out) == image.digest
    assert skopeo.verify_dir(out) == image.blobs

    # At most once across the cluster, and at least once since every node began empty: per blob,
    # the registry wrote exactly the blob's size in all (no allowance: there is no other source).
    assert await upstream_blob_bytes(p2p_upstream, mark, list(image.blobs)) == image.blobs

    chunks = sum(chunk_count(size) for size in image.blobs.values())
    fetched_chunks = 0.0
    for node in cluster.nodes:
        metrics = node.metrics()
        assert metrics.sum(BLOB_BYTES) == image.blob_bytes, node.name
        assert metrics.sum(BLOB_BYTES, source="peer") > 0, node.name
        assert metrics.sum(PEER_BYTES, direction="download") > 0, node.name
        # Every chunk of every blob came from one place or the other, none by falling back.
        by_peers = metrics.sum(CHUNKS, source="peer")
        fetched_chunks += metrics.sum(CHUNKS, source="upstream")
        assert by_peers > 0, node.name
        assert by_peers + metrics.sum(CHUNKS, source="upstream") == chunks, node.name
        assert metrics.sum(FALLBACKS) == 0, node.name
        assert 0 <= metrics.sum(SINCE_PEER_SUCCESS) < PULL_TIMEOUT, node.name
    assert fetched_chunks == chunks  # each chunk fetched from upstream by one node

    everyone_holds_all = {node.host: len(image.blobs) for node in cluster.nodes}
    await until(lambda: held_blobs(cluster) == everyone_holds_all, "the tracker knows every blob")


async def test_the_only_seeder_killed_mid_transfer_leaves_every_pull_complete_and_correct(
    start_cluster: Callable[..., Cluster], p2p_images: P2PImages
) -> None:
    cluster = start_cluster(size=4)
    seeder, *pullers = cluster.nodes
    layer = p2p_images.big.largest_layer()
    async with client(PULL_TIMEOUT) as session:
        assert (await pull_image(session, seeder, P2PImages.BIG)).blobs == correct(p2p_images.big)
        received: dict[str, dict[str, int]] = {node.name: {} for node in pullers}
        pulls = [
            asyncio.create_task(pull_image(session, node, P2PImages.BIG, received[node.name]))
            for node in pullers
        ]
        # Killed as the layer's first bytes reach a puller: the pullers have begun the layer, and
        # the seeder is the cluster's only complete source of it.
        await until(lambda: any(receiving(n, layer.digest) for n in pullers), "bytes arrive", 0.005)
        running = [not pull.done() for pull in pulls]
        seeder.kill()
        # The tracker forgets the seeder within NODE_TTL; the chunks nobody holds whole are leased
        # again (or fetched after a stall timeout of 10 s): seconds, not minutes.
        _, pending = await asyncio.wait(pulls, timeout=RECOVERY_TIMEOUT)
        for pull in pending:
            pull.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    assert running == [True] * len(pullers), "the pulls ended before the seeder was killed"
    layer_received = {name: blobs.get(layer.digest, 0) for name, blobs in received.items()}
    assert not pending, (
        f"{len(pending)} of {len(pullers)} pulls still running {RECOVERY_TIMEOUT:.0f} s after "
        f"the seeder was killed; bytes of the {layer.size}-byte layer received: {layer_received}"
    )
    assert [pull.result().blobs for pull in pulls] == [correct(p2p_images.big)] * len(pullers)


def fetched(cluster: Cluster) -> float:
    """Bytes the cluster's nodes have fetched from upstream so far."""
    return sum(node.metric(UPSTREAM_BYTES) for node in cluster.nodes)


async def test_pulls_complete_through_upstream_when_the_tracker_is_gone(
    start_cluster: Callable[..., Cluster], p2p_upstream: Registry, p2p_images: P2PImages
) -> None:
    cluster = start_cluster(size=4)
    async with client(PULL_TIMEOUT) as session:
        # The tracker dies while the cluster is pulling through the swarm...
        pulls = [asyncio.create_task(pull_image(session, n, P2PImages.BIG)) for n in cluster.nodes]
        await until(lambda: fetched(cluster) >= 32 * MiB, "the cluster is fetching")
        running = [not pull.done() for pull in pulls]
        cluster.tracker.kill()
        during = await asyncio.gather(*pulls)
        assert running == [True] * len(pulls), "the pulls ended before the tracker was killed"
        assert [p.blobs for p in during] == [correct(p2p_images.big)] * len(pulls)

        # ...and stays dead: a new image comes from upstream on every node, none from peers.
        before = [node.metrics() for node in cluster.nodes]
        after_death = await asyncio.gather(
            *(pull_image(session, node, P2PImages.SMALL) for node in cluster.nodes)
        )
    assert [p.blobs for p in after_death] == [correct(p2p_images.small)] * len(cluster.nodes)
    small = p2p_images.small.image().blob_bytes
    for node, earlier in zip(cluster.nodes, before, strict=True):
        now = node.metrics()
        served = now.sum(BLOB_BYTES, source="upstream") - earlier.sum(BLOB_BYTES, source="upstream")
        assert served == small, node.name
        assert now.sum(BLOB_BYTES, source="peer") == earlier.sum(BLOB_BYTES, source="peer")
        assert now.sum(FALLBACKS, reason="tracker") > 0, node.name


async def test_an_image_one_node_held_before_a_tracker_restart_costs_one_upstream_copy(
    start_cluster: Callable[..., Cluster], p2p_upstream: Registry, p2p_images: P2PImages
) -> None:
    """A tracker restarted empty learns again what the nodes hold as they join, but takes no
    chunk's metainfo from one node alone (docs/security.md): an image one node pulled before
    the restart is fetched by the others under leases, one copy for the cluster, rather than
    by each of them once its stall timeout passed."""
    cluster = start_cluster(size=4)
    holder, *pullers = cluster.nodes
    image = p2p_images.big.image()
    async with client(PULL_TIMEOUT) as session:
        assert (await pull_image(session, holder, P2PImages.BIG)).blobs == correct(p2p_images.big)
        cluster.tracker.kill()
        cluster.tracker.start()
        # Every node joins the new tracker (one that has not yet fetches from the upstream on
        # its own), and the holder announces the image again.
        await until(
            lambda: all(
                n.log_path.read_text().count("joined the cluster") >= 2 for n in cluster.nodes
            ),
            "every node joined the new tracker",
        )
        alone = dict.fromkeys(image.blobs, 1)
        await until(lambda: cluster.holders(image.blobs) == alone, "the holder announced again")
        mark = p2p_upstream.mark()
        pulled = await asyncio.gather(*(pull_image(session, n, P2PImages.BIG) for n in pullers))
    assert [p.blobs for p in pulled] == [correct(p2p_images.big)] * len(pullers)
    assert await upstream_blob_bytes(p2p_upstream, mark, list(image.blobs)) == image.blobs
    for node in pullers:
        assert node.metric(FALLBACKS) == 0, node.name


async def test_a_tracker_restarted_mid_rollout_costs_no_pull(
    start_cluster: Callable[..., Cluster], p2p_upstream: Registry, p2p_images: P2PImages
) -> None:
    """The tracker restarts empty while three nodes pull an image a fourth holds: no pull fails
    or hangs, every byte is right, and the image costs the upstream one copy (and a few chunks
    under way at the restart), not a copy per puller. The pulls keep swarming while they wait
    for the tracker; the nodes join the new tracker and announce what they hold, and the pulls
    go on with it (the chunks only the holder has are fetched under leases: the new tracker
    takes their metainfo from no node alone)."""
    cluster = start_cluster(size=4)
    holder, *pullers = cluster.nodes
    layer = p2p_images.big.largest_layer()
    blobs = p2p_images.big.image().blobs
    async with client(PULL_TIMEOUT) as session:
        assert (await pull_image(session, holder, P2PImages.BIG)).blobs == correct(p2p_images.big)
        mark = p2p_upstream.mark()
        pulls = [asyncio.create_task(pull_image(session, n, P2PImages.BIG)) for n in pullers]
        await until(lambda: any(receiving(n, layer.digest) for n in pullers), "bytes arrive", 0.005)
        running = [not pull.done() for pull in pulls]
        cluster.tracker.kill()
        cluster.tracker.start()
        pulled = await asyncio.gather(*pulls)
    assert running == [True] * len(pullers), "the pulls ended before the tracker restarted"
    assert [p.blobs for p in pulled] == [correct(p2p_images.big)] * len(pullers)
    fetched = await upstream_blob_bytes(p2p_upstream, mark, list(blobs))
    # One copy of each blob, and a chunk per puller to spare: one it was swarming when the
    # tracker went could stall and come again after a stall timeout (measured: none did, and
    # 0-3 chunks of the big layer came from no upstream at all; before the pulls waited for
    # the tracker, each fetched everything it lacked once its watch broke: 2.9 copies).
    slack = len(pullers) * chunk_size(layer.size)
    extra = {digest: n - blobs[digest] for digest, n in fetched.items() if n > blobs[digest]}
    assert sum(extra.values()) <= slack, f"bytes fetched from upstream beyond one copy: {extra}"
    for node in pullers:
        assert node.metric(FALLBACKS, reason="tracker") == 0, node.name
    everyone = dict.fromkeys(blobs, len(cluster.nodes))
    await until(lambda: cluster.holders(blobs) == everyone, "the new tracker knows every holder")


async def test_a_pull_asked_for_while_the_tracker_restarts_goes_through_the_cluster(
    start_cluster: Callable[..., Cluster], p2p_upstream: Registry, p2p_images: P2PImages
) -> None:
    """A client asks a node for an image while the node's tracker is away (restarting): the
    node lost its tracker a moment ago, so it pulls through the cluster, waiting for the
    tracker, rather than fetching the image whole from the upstream as a node outside any
    cluster does. (Which chunks then come from the two holders depends on which of them joined
    the new tracker first: a chunk only one joined holder has is fetched once more under a
    lease, since the new tracker takes its metainfo from no node alone.)"""
    cluster = start_cluster(size=3)
    *holders, puller = cluster.nodes
    image = p2p_images.big.image()
    async with client(PULL_TIMEOUT) as session:
        for holder in holders:
            assert (await pull_image(session, holder, P2PImages.BIG)).blobs == correct(
                p2p_images.big
            )
        cluster.tracker.kill()
        await until(
            lambda: "tracker unreachable; serving on" in puller.log_path.read_text(),
            "the puller lost its tracker",
        )
        await asyncio.sleep(1.0)  # and tried it again (0.2 s, then 0.4 s later)
        mark = p2p_upstream.mark()
        pull = asyncio.create_task(pull_image(session, puller, P2PImages.BIG))
        await asyncio.sleep(2.0)
        assert not pull.done(), "the pull did not wait for the tracker"
        cluster.tracker.start()
        pulled = await pull
    assert pulled.blobs == correct(p2p_images.big)
    assert puller.metric(FALLBACKS) == 0
    lines = puller.log_path.read_text().splitlines()
    through = [line for line in lines if "pulling blob through the swarm" in line]
    assert [d for d in image.blobs if not any(d in line for line in through)] == []
    fetched = await upstream_blob_bytes(p2p_upstream, mark, list(image.blobs))
    assert all(fetched[digest] <= size for digest, size in image.blobs.items()), fetched


def corrupt(path: Path, offset: int, length: int) -> None:
    """Invert `length` bytes of the file at `offset`, in place."""
    with path.open("r+b") as f:
        f.seek(offset)
        good = f.read(length)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in good))


async def test_a_corrupted_chunk_on_one_node_never_reaches_a_client(
    start_cluster: Callable[..., Cluster], p2p_upstream: Registry, p2p_images: P2PImages
) -> None:
    """The cluster's only holder of a layer serves one chunk with a piece gone bad on its disk
    (behind its back, after the piece was checked). The pullers' piece checks fail; they tell
    the tracker, which asks the holder to check that chunk: it finds the damage and withdraws
    the chunk alone, so the tracker leases it to one puller and the others get it from there.
    One copy of that chunk is fetched again, every other chunk still comes from the holder,
    no puller waits out a stall timeout, and the holder serves its own clients its copy no
    more."""
    cluster = start_cluster(size=4, node_args={0: ["--scrub-rate", "0"]})
    holder, *pullers = cluster.nodes
    layer = p2p_images.big.largest_layer()
    async with client(PULL_TIMEOUT) as session:
        first = await pull_image(session, holder, P2PImages.BIG)
        assert first.blobs == correct(p2p_images.big)
        # The holder is now the cluster's only source of the layer; one of its chunks goes bad
        # on disk (a piece in the middle of chunk 5), behind the node's back.
        await stored(holder, layer.digest)
        bad = chunk_file(holder, layer.digest, 5)
        good = hashlib.sha256(bad.read_bytes()).digest()
        corrupt(bad, offset=MiB + 123, length=4096)
        assert hashlib.sha256(bad.read_bytes()).digest() != good
        mark = p2p_upstream.mark()
        pulled = await asyncio.gather(
            *(pull_image(session, node, P2PImages.BIG) for node in pullers)
        )

    assert [p.blobs for p in pulled] == [correct(p2p_images.big)] * len(pullers)
    refetched = (await upstream_blob_bytes(p2p_upstream, mark, [layer.digest]))[layer.digest]
    assert refetched == chunk_size(layer.size)
    for node in pullers:
        assert node.metric(BLOB_BYTES, source="peer") > 0, node.name
        assert node.metric(FALLBACKS) == 0, node.name
    assert "seeded chunk damaged" in holder.log_path.read_text()
    # The holder knows its copy is damaged: its own clients get the layer whole, not its copy.
    async with client(PULL_TIMEOUT) as session:
        again = await pull_image(session, holder, P2PImages.BIG)
    assert again.blobs == correct(p2p_images.big)


async def test_a_damaged_chunk_a_restarted_holder_finds_when_asked_for_it_is_withdrawn_alone(
    start_cluster: Callable[..., Cluster], p2p_upstream: Registry, p2p_images: P2PImages
) -> None:
    """A holder restarted seeds its store without hashing it again; a piece a disk changed while
    it was down fails the holder's own check when a peer first asks for it. The holder withdraws
    that chunk alone and hides the blob from its clients until it is verified again: the
    cluster fetches that chunk once, every other chunk still comes from the holder (purging
    the blob at once took them away, and the pullers fetched them again from upstream)."""
    cluster = start_cluster(size=5, node_args={0: ["--scrub-rate", "0"]})
    holder, witness, *pullers = cluster.nodes
    layer = p2p_images.big.largest_layer()

    def chunks_held(node: Node) -> int:
        nodes = cluster.tracker.status()["nodes"]
        assert isinstance(nodes, list)
        return int({n["registry"]: n["chunks"] for n in nodes}.get(node.host, 0))

    async with client(PULL_TIMEOUT) as session:
        # Two holders, so the cluster knows the layer's metainfo from two witnesses.
        for node in (holder, witness):
            assert (await pull_image(session, node, P2PImages.BIG)).blobs == correct(p2p_images.big)
            await stored(node, layer.digest)
        await until(lambda: chunks_held(holder) > chunk_count(layer.size), "the holder counted")
        held = chunks_held(holder)
        holder.stop()
        corrupt(chunk_file(holder, layer.digest, 5), offset=MiB + 123, length=4096)
        holder.start()
        await until(lambda: chunks_held(holder) >= held, "the holder announced its store again")
        witness.stop()  # the restarted holder is the only source now
        mark = p2p_upstream.mark()
        pulled = await asyncio.gather(
            *(pull_image(session, node, P2PImages.BIG) for node in pullers)
        )
        assert [p.blobs for p in pulled] == [correct(p2p_images.big)] * len(pullers)
        refetched = (await upstream_blob_bytes(p2p_upstream, mark, [layer.digest]))[layer.digest]
        assert refetched == chunk_size(layer.size)
        assert "seeded chunk damaged; withdrawn" in holder.log_path.read_text()
        assert (await pull_image(session, holder, P2PImages.BIG)).blobs == correct(p2p_images.big)


async def test_a_chunk_file_the_only_holder_lost_is_withdrawn_alone(
    start_cluster: Callable[..., Cluster], p2p_upstream: Registry, p2p_images: P2PImages
) -> None:
    """The cluster's only holder of a layer lost the tail of one chunk file behind its back (an
    unclean stop, a bad disk): its peers' requests for that chunk fail to read. The holder stops
    offering that chunk and withdraws it alone, so the tracker leases it to one puller and the
    others get it from there, while every other chunk still comes from the holder: one copy of
    that chunk is fetched again, and no puller waits out a stall timeout."""
    cluster = start_cluster(size=4, node_args={0: ["--scrub-rate", "0"]})
    holder, *pullers = cluster.nodes
    layer = p2p_images.big.largest_layer()
    async with client(PULL_TIMEOUT) as session:
        assert (await pull_image(session, holder, P2PImages.BIG)).blobs == correct(p2p_images.big)
        await stored(holder, layer.digest)
        lost = chunk_file(holder, layer.digest, 5)
        os.truncate(lost, lost.stat().st_size // 2)
        mark = p2p_upstream.mark()
        pulled = await asyncio.gather(
            *(pull_image(session, node, P2PImages.BIG) for node in pullers)
        )

    assert [p.blobs for p in pulled] == [correct(p2p_images.big)] * len(pullers)
    assert "seeded chunk unreadable" in holder.log_path.read_text()

    def one_chunk_fewer() -> bool:  # than each puller, once their last announcements are in
        nodes = cluster.tracker.status()["nodes"]
        assert isinstance(nodes, list)
        chunks = {node["registry"]: node["chunks"] for node in nodes}
        return {chunks[node.host] for node in pullers} == {chunks[holder.host] + 1}

    await until(one_chunk_fewer, "the tracker counts the holder one chunk short")
    refetched = (await upstream_blob_bytes(p2p_upstream, mark, [layer.digest]))[layer.digest]
    assert refetched == chunk_size(layer.size)
    for node in pullers:
        assert node.metric(FALLBACKS) == 0, node.name

    # A tracker restarted empty hears again what each node holds: the holder leaves that chunk
    # out (it announced the whole blob again, and peers were sent to it for the chunk anew).
    cluster.tracker.kill()
    cluster.tracker.start()
    await until(
        lambda: all(n.log_path.read_text().count("joined the cluster") >= 2 for n in cluster.nodes),
        "every node joined the new tracker",
    )
    await until(one_chunk_fewer, "the restarted tracker counts the holder one chunk short")


async def test_a_chunk_whose_only_source_lies_about_it_is_fetched_once(
    start_cluster: Callable[..., Cluster],
    p2p_upstream: Registry,
    p2p_images: P2PImages,
    workdir: Path,
) -> None:
    """A node says it holds a chunk of a layer, under the chunk's right metainfo, and sends bytes
    that fail every piece check; asked to check its copy, it says nothing. Once its check had
    its grace, the next puller that says the pieces still fail is leased the chunk, fetches it
    once, and the others get it from there: the layer comes from upstream once, and no puller
    waits out a stall timeout."""
    cluster = start_cluster(size=4)
    first, *pullers = cluster.nodes
    layer = p2p_images.big.largest_layer()
    async with client(PULL_TIMEOUT) as session:
        assert (await pull_image(session, first, P2PImages.BIG)).blobs == correct(p2p_images.big)
        await stored(first, layer.digest)
        right = metainfo.from_file(chunk_file(first, layer.digest, 5), layer.digest, layer.size, 5)
        async with lying_holder(cluster, workdir, right, layer.size):
            first.stop()  # the liar is chunk 5's only source; the rest of the layer is cold
            mark = p2p_upstream.mark()
            pulled = await asyncio.gather(
                *(pull_image(session, node, P2PImages.BIG) for node in pullers)
            )
    assert [p.blobs for p in pulled] == [correct(p2p_images.big)] * len(pullers)
    refetched = (await upstream_blob_bytes(p2p_upstream, mark, [layer.digest]))[layer.digest]
    assert refetched == layer.size
    for node in pullers:
        assert node.metric(FALLBACKS) == 0, node.name
    assert "sends pieces that fail their hash; leased" in cluster.tracker.log_path.read_text()


@asynccontextmanager
async def fake_node(
    cluster: Cluster, name: str, host: str
) -> AsyncIterator[tuple[PeerSession, TrackerClient]]:
    """A node of the cluster made in the test's process: a libtorrent session on `host`, and a
    tracker client joined as `name`, heartbeating, that takes no orders."""
    session = PeerSession(host, 0)
    await session.start()
    credential = cluster.tracker.credential(Role.NODE, name)
    tracker = TrackerClient(cluster.tracker.address, credential=credential)

    async def heartbeat() -> None:
        while True:
            await tracker.heartbeat(name)
            await asyncio.sleep(0.5)

    beating: asyncio.Task[None] | None = None
    try:
        await tracker.join(NodeAddress(name, f"{host}:1", f"{host}:{session.port}"), "i")
        beating = asyncio.create_task(heartbeat())
        yield session, tracker
    finally:
        if beating is not None:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
        await tracker.close()
        await session.close()


@asynccontextmanager
async def lying_holder(
    cluster: Cluster, workdir: Path, torrent: metainfo.ChunkTorrent, size: int
) -> AsyncIterator[None]:
    """A node that says it holds one chunk whole and seeds random bytes under the chunk's own
    metainfo, unchecked: every piece it sends fails its hash. It takes no orders."""
    directory = workdir / "liar"
    directory.mkdir()
    start, end = chunk_range(size, torrent.index)
    (directory / torrent.name).write_bytes(os.urandom(end - start))
    async with fake_node(cluster, "liar", "127.0.0.21") as (session, tracker):
        await session.add(torrent, directory, seed=True, hashed=True)
        held = HeldBlob(torrent.digest, size, chunk_count(size), (torrent.index,))
        await tracker.announce("liar", [held])
        yield


@asynccontextmanager
async def rogue_peer(
    cluster: Cluster, workdir: Path, digest: str, size: int, chunk: int
) -> AsyncIterator[None]:
    """A node that takes the lease of one chunk of a blob (as any node may) and seeds wrong bytes
    for it, under metainfo made from those bytes, published to the tracker as the lease holder:
    every piece checks out, only the blob's digest does not."""
    directory = workdir / "rogue"
    directory.mkdir()
    start, end = chunk_range(size, chunk)
    path = directory / chunk_name(digest, chunk)
    path.write_bytes(os.urandom(end - start))
    torrent = metainfo.from_file(path, digest, size, chunk)
    async with fake_node(cluster, "rogue", "127.0.0.20") as (session, tracker):
        await session.add(torrent, directory, seed=True)
        count = chunk_count(size)
        placement = await tracker.locate("rogue", digest, size, count, [chunk], max_leases=1)
        assert placement.chunks[0].directive is Directive.FETCH
        await tracker.publish("rogue", digest, size, count, chunk, torrent.metainfo)
        yield


async def test_a_blob_pulled_with_bad_metainfo_fails_once_then_comes_whole_from_upstream(
    start_cluster: Callable[..., Cluster],
    p2p_upstream: Registry,
    p2p_images: P2PImages,
    workdir: Path,
) -> None:
    cluster = start_cluster(size=1)
    (node,) = cluster.nodes
    layer = p2p_images.small.largest_layer()  # 12 MiB: 3 chunks
    async with (
        rogue_peer(cluster, workdir, layer.digest, layer.size, 1),
        client(PULL_TIMEOUT) as session,
    ):
        first = await pull_image(session, node, P2PImages.SMALL)
        # The layer's response is cut short, never completed with wrong bytes.
        got = first.blobs[layer.digest]
        assert got.length < layer.size and got.digest != layer.digest, got
        mark = p2p_upstream.mark()
        second = await pull_image(session, node, P2PImages.SMALL)
    assert second.blobs == correct(p2p_images.small)
    # The next try went to the upstream for the whole layer, not to the cluster.
    assert [e.written for e in p2p_upstream.blob_fetches(layer.digest, mark)] == [layer.size]
    assert node.metric(FALLBACKS, reason="corrupt") == 1


async def test_a_range_of_a_chunk_a_peer_sent_wrong_is_never_answered_with_its_bytes(
    start_cluster: Callable[..., Cluster],
    p2p_upstream: Registry,
    p2p_images: P2PImages,
    workdir: Path,
) -> None:
    """The rogue's chunk passes every piece check; only the blob's digest fails. A range inside
    it, asked while the blob arrives through the cluster, is answered with the download's error,
    then with the right bytes once the upstream has sent the blob."""
    cluster = start_cluster(size=1)
    (node,) = cluster.nodes
    layer = p2p_images.small.largest_layer()
    data = p2p_images.small.read_blob(layer.digest)
    repository = P2PImages.SMALL.rpartition(":")[0]
    url = f"{node.url}/v2/{repository}/blobs/{layer.digest}"
    start, _ = chunk_range(layer.size, 1)
    headers = {"Range": f"bytes={start}-{start + 4095}"}
    async with (
        rogue_peer(cluster, workdir, layer.digest, layer.size, 1),
        client(PULL_TIMEOUT) as session,
    ):
        async with session.get(url, headers=headers) as response:
            status, body = response.status, await response.read()
        assert status == 502, (status, len(body))
        assert b"DIGEST_INVALID" in body
        mark = p2p_upstream.mark()
        async with session.get(url, headers=headers) as response:
            status, body = response.status, await response.read()
    assert (status, body) == (206, data[start : start + 4096])
    # The second answer came from the whole layer, fetched from the upstream and checked.
    assert [e.written for e in p2p_upstream.blob_fetches(layer.digest, mark)] == [layer.size]
    assert node.metric(FALLBACKS, reason="corrupt") == 1


async def test_a_download_limit_bounds_what_a_node_takes_from_its_peers(
    start_cluster: Callable[..., Cluster], p2p_images: P2PImages
) -> None:
    limit = 4 * MiB
    cluster = start_cluster(size=2, node_args={1: ["--download-limit", str(limit)]})
    seeder, limited = cluster.nodes
    image = p2p_images.small.image()
    async with client(PULL_TIMEOUT) as session:
        assert (await pull_image(session, seeder, P2PImages.SMALL)).blobs == correct(
            p2p_images.small
        )
        started = time.monotonic()
        pulled = await pull_image(session, limited, P2PImages.SMALL)
        elapsed = time.monotonic() - started
    assert pulled.blobs == correct(p2p_images.small)
    assert limited.metric(BLOB_BYTES, source="peer") == image.blob_bytes
    # The peers are on 127.0.0.11-12, a "local network" to libtorrent: the limit must hold there
    # too (a cluster's nodes are on one private network). A token bucket may burst one second.
    assert elapsed >= image.blob_bytes / limit - 1.0, f"{image.blob_bytes} bytes in {elapsed:.2f} s"
