"""A cluster behind a slow link to its registry (an edge site, a remote region): six real nodes
and a real tracker pull one image at once through a proxy that passes the registry's answers at a
few hundred KB/s, and one of them is frozen mid-pull while others swarm from it. Every pull
completes with the right bytes, and the registry's own log shows each blob sent at most once,
plus one chunk per fallback the nodes count (and one for the lease of the frozen node).

The tracker lets one chunk at a time come from upstream (`--upstream-leases 1`), so most chunks
wait their turn for much longer than the nodes' stall timeout: waiting on the tracker is not a
stall, and a fetch that brings bytes slowly is never cut short and started again.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import aiohttp
import pytest

from node.store.chunking import chunk_count, chunk_size
from tests.integration.conftest import P2PImages
from tests.support.cluster import Cluster, Received, pull_image, receiving
from tests.support.registry import Registry, upstream_blob_bytes
from tests.support.throttle import Throttle

pytestmark = pytest.mark.integration

RATE = 600_000  # bytes a second from the registry to the whole cluster
STALL = 2.0  # the nodes' --stall-timeout: far shorter than a chunk's wait for its turn
FROZEN = 8.0  # seconds node0 is stopped with SIGSTOP, well past --silent-after
PULL_TIMEOUT = 240.0
FALLBACKS = "distributed_images_fallbacks_total"
RESUMES = "distributed_images_upstream_resumes_total"


async def freeze_when_receiving(cluster: Cluster, digest: str) -> None:
    """Stop node0 once bytes of the blob reached it, for FROZEN seconds, then let it go on."""
    node = cluster.nodes[0]
    deadline = time.monotonic() + PULL_TIMEOUT
    while not receiving(node, digest):
        assert time.monotonic() < deadline, "node0 never received a byte of the layer"
        await asyncio.sleep(0.2)
    node.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(FROZEN)
    finally:
        node.signal(signal.SIGCONT)


async def test_a_slow_upstream_and_a_frozen_holder_cost_no_pull_and_no_extra_upstream_bytes(
    start_cluster: Callable[..., Cluster], p2p_upstream: Registry, p2p_images: P2PImages
) -> None:
    image = p2p_images.small.image()
    layer = p2p_images.small.largest_layer()
    with Throttle(p2p_upstream.host, RATE) as link:
        cluster = start_cluster(
            size=6,
            node_args={i: ["--stall-timeout", str(STALL)] for i in range(6)},
            tracker_args=["--upstream-leases", "1", "--silent-after", "2"],
            upstream_url=link.url,
        )
        mark = p2p_upstream.mark()
        timeout = aiohttp.ClientTimeout(total=PULL_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            pulls = [pull_image(session, node, P2PImages.SMALL) for node in cluster.nodes]
            freeze = freeze_when_receiving(cluster, layer.digest)
            *pulled, _ = await asyncio.gather(*pulls, freeze)

    right = {d: Received(200, d, size) for d, size in image.blobs.items()}
    assert [p.blobs for p in pulled] == [right] * len(cluster.nodes)
    assert {p.manifest for p in pulled} == {image.digest}

    metrics = [node.metrics() for node in cluster.nodes]
    fallbacks = sum(m.sum(FALLBACKS) for m in metrics)
    assert sum(m.sum(RESUMES) for m in metrics) == 0  # the link is slow, never broken
    written = await upstream_blob_bytes(p2p_upstream, mark, list(image.blobs))
    requests = {d: len(p2p_upstream.blob_fetches(d, since=mark)) for d in image.blobs}
    for digest, size in image.blobs.items():
        extra = fallbacks + 1  # the frozen node's lease moved on, once at most
        assert size <= written[digest] <= size + extra * chunk_size(size), digest
        assert requests[digest] <= chunk_count(size) + extra, digest
