"""An image seeded from one node's images directory is pulled on another node with no upstream:
its tag is resolved through the tracker, its manifest fetched from the seeding node and checked,
its blobs swarmed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.integration.conftest import P2PImages
from tests.support.cluster import Cluster, Received, pull_image, until
from tests.support.process import http_status, run
from tests.support.registry import Registry

BLOB_BYTES = "distributed_images_blob_bytes_total"
REQUESTS = "distributed_images_requests_total"
DEAD_UPSTREAM = "http://127.0.0.1:1"  # nothing listens there: no upstream at all
SEEDED_WITHIN = 30.0


async def test_a_tag_seeded_on_one_node_pulls_on_another_without_any_upstream(
    start_cluster: Callable[..., Cluster],
    p2p_upstream: Registry,
    p2p_images: P2PImages,
    tmp_path: Path,
) -> None:
    images_dir = archived(p2p_upstream, tmp_path)
    offline = ["--registry", f"{p2p_upstream.host}={DEAD_UPSTREAM}"]
    cluster = start_cluster(
        size=2,
        node_args={0: [*offline, "--images-dir", str(images_dir)], 1: offline},
        seeders=[0],
    )
    seeder, other = cluster.nodes
    repository, _, tag = P2PImages.SMALL.rpartition(":")
    deadline = time.monotonic() + SEEDED_WITHIN
    # The seeder serves the tag once its archive is imported (it is ready by then), and tells
    # the tracker a moment later, once it seeds the archive's blobs: the other node resolves
    # the tag from then on.
    asked_of_the_seeder = 0.0
    for node, never in ((seeder, "served its archive's tag"), (other, "learned the tag")):
        manifest_url = f"{node.url}/v2/{repository}/manifests/{tag}"
        # The upstream is asked first, and retried: a request takes a second or so to fail over.
        while await asyncio.to_thread(http_status, manifest_url, 10.0) != 200:
            assert time.monotonic() < deadline, f"{node.name} never {never}"
            await asyncio.sleep(0.2)
        asked_of_the_seeder = asked_of_the_seeder or seeder.metric(REQUESTS, endpoint="manifest")

    async with aiohttp.ClientSession() as session:
        pulled = await pull_image(session, other, P2PImages.SMALL)
    # The manifest came through the swarm: nobody asked the seeder's registry API but this test.
    assert seeder.metric(REQUESTS, endpoint="manifest") == asked_of_the_seeder

    image = p2p_images.small.image()
    assert pulled.blobs == {d: Received(200, d, size) for d, size in image.blobs.items()}
    assert other.metric(BLOB_BYTES, source="peer") == image.blob_bytes
    assert other.metric(BLOB_BYTES, source="upstream") == 0


async def test_a_seeded_tag_asked_for_while_the_tracker_restarts_is_served_once_it_is_back(
    start_cluster: Callable[..., Cluster],
    p2p_upstream: Registry,
    p2p_images: P2PImages,
    tmp_path: Path,
) -> None:
    """A tag only the cluster has (seeded on one node, its upstream unreachable) is asked of a
    node while the tracker restarts: the node waits for the tracker to come back and to learn
    the tag again, rather than answer that the tag does not exist."""
    images_dir = archived(p2p_upstream, tmp_path)
    offline = ["--registry", f"{p2p_upstream.host}={DEAD_UPSTREAM}"]
    cluster = start_cluster(
        size=3,
        node_args={0: [*offline, "--images-dir", str(images_dir)], 1: offline, 2: offline},
        seeders=[0],
    )
    _, witness, asker = cluster.nodes
    repository, _, tag = P2PImages.SMALL.rpartition(":")
    path = f"/v2/{repository}/manifests/{tag}"
    deadline = time.monotonic() + SEEDED_WITHIN
    while await asyncio.to_thread(http_status, witness.url + path, 10.0) != 200:
        assert time.monotonic() < deadline, "the tracker never learned the tag"
        await asyncio.sleep(0.2)

    cluster.tracker.kill()
    await until(
        lambda: "tracker unreachable; serving on" in asker.log_path.read_text(),
        "the node lost its tracker",
    )
    asked = asyncio.create_task(asyncio.to_thread(http_status, asker.url + path, 60.0))
    await asyncio.sleep(2.0)
    assert not asked.done(), f"answered {asked.result()} without the tracker"
    cluster.tracker.start()
    assert await asked == 200
    async with aiohttp.ClientSession() as session:
        pulled = await pull_image(session, asker, P2PImages.SMALL)
    image = p2p_images.small.image()
    assert pulled.blobs == {d: Received(200, d, size) for d, size in image.blobs.items()}


def archived(upstream: Registry, tmp_path: Path) -> Path:
    """An images directory holding the small image as an OCI archive."""
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    name = f"{upstream.host}/{P2PImages.SMALL}"
    run(
        [
            "skopeo", "copy", "--quiet", "--src-tls-verify=false", "--preserve-digests",
            f"docker://{name}", f"oci-archive:{images_dir / 'small.tar'}:{name}",
        ],
        timeout=120,
    )  # fmt: skip
    return images_dir
