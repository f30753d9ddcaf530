"""A data dir on a small disk that fills up (before a pull, during one from the upstream or
through the swarm) or turns read-only: pulls still succeed, streamed through without being
stored, with one log line and a metric; SQLite failing on the full disk answers no 500."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from node.store.chunking import chunk_count
from tests.integration.conftest import P2PImages
from tests.support import disks, skopeo
from tests.support.cluster import Cluster, client, correct, pull_image, receiving, until
from tests.support.images import TestImages
from tests.support.node import Node
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

DISK = 40 << 20  # smaller than test/big's 64 MiB layer
PULL_TIMEOUT = 120.0
FULL_LINE = "the store's disk is full"


@pytest.fixture
def small_disk(workdir: Path) -> Iterator[Path]:
    """A 40 MiB tmpfs, unmounted after the test's nodes are stopped."""
    with disks.tmpfs(workdir / "small-disk", DISK) as mountpoint:
        yield mountpoint


def _start(node_factory: Callable[..., Node], upstream: Registry, disk: Path) -> Node:
    data_dir = disk / "data"
    return node_factory(
        {upstream.host: upstream.url},
        upstream.host,
        data_dir=data_dir,
        extra_args=["--data-dir", str(data_dir), "--prefetch", "0"],
    )


def _logged_once(node: Node, since: float) -> bool:
    """Whether the node said its disk is full once, or once a minute at most (the test may run
    longer than a minute on a busy machine)."""
    lines = node.log_path.read_text(errors="replace").count(FULL_LINE)
    return 1 <= lines <= 1 + int((time.monotonic() - since) // 60)


def _server_errors(node: Node) -> float:
    metrics = node.metrics()
    return sum(
        value
        for key, value in metrics.items()
        if key.startswith("distributed_images_requests_total{") and 'code="5' in key
    )


def _stored(node: Node) -> set[str]:
    return {"sha256:" + p.name for p in (node.data_dir / "blobs" / "sha256").glob("*/*")}


def test_an_image_larger_than_the_disk_is_pulled_whole(
    small_disk: Path,
    node_factory: Callable[..., Node],
    upstream: Registry,
    test_images: TestImages,
    workdir: Path,
) -> None:
    started = time.monotonic()
    node = _start(node_factory, upstream, small_disk)
    image = test_images.big.image()
    big = max(image.layers, key=lambda layer: layer.size)
    mark = upstream.mark()

    for attempt in ("first", "second"):
        out = skopeo.pull(node.host, f"{TestImages.BIG}:{TestImages.TAG}", workdir / attempt)
        assert skopeo.verify_dir(out) == image.blobs
    # What fits is stored and served from there the second time; the layer larger than the disk
    # came from the upstream both times, and was never written.
    fetches = {d: len(upstream.blob_fetches(d, since=mark)) for d in image.blobs}
    assert fetches == {d: 2 if d == big.digest else 1 for d in image.blobs}
    fitting = {image.digest, image.config.digest} | {b.digest for b in image.layers if b != big}
    assert _stored(node) == fitting
    assert node.metric("distributed_images_uncached_blobs_total") == 2
    assert node.metric("distributed_images_blob_bytes_total", source="upstream") >= 2 * big.size
    assert _logged_once(node, started)
    assert _server_errors(node) == 0


async def _get(url: str) -> tuple[int, str, int]:
    """Status, digest and length of what the node answered; a transfer that stalls for a minute
    fails (a response short of its length would keep the client waiting for ever)."""
    digest, length = hashlib.sha256(), 0
    timeout = aiohttp.ClientTimeout(sock_read=60)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        async for block in response.content.iter_chunked(1 << 16):
            digest.update(block)
            length += len(block)
        return response.status, "sha256:" + digest.hexdigest(), length


async def test_a_disk_that_fills_up_mid_download_still_serves_the_whole_blob(
    small_disk: Path,
    node_factory: Callable[..., Node],
    upstream: Registry,
    test_images: TestImages,
) -> None:
    started = time.monotonic()
    node = _start(node_factory, upstream, small_disk)
    image = test_images.big.image()
    big = max(image.layers, key=lambda layer: layer.size)
    mark = upstream.mark()
    # Asked for by digest, with no manifest before: its size is unknown until the upstream
    # answers, so the download starts, and the disk fills up under it.
    url = f"{node.url}/v2/{TestImages.BIG}/blobs/{big.digest}"
    clients = await asyncio.gather(_get(url), _get(url))
    assert clients == [(200, big.digest, big.size)] * 2
    # The download's own transfer, then the rest from where a client was when the disk filled.
    fetches = upstream.blob_fetches(big.digest, since=mark)
    assert len(fetches) >= 2, fetches
    assert big.digest not in _stored(node)
    assert [p for p in (node.data_dir / "tmp").iterdir() if not p.is_symlink()] == []
    assert node.metric("distributed_images_store_errors_total", kind="disk_full") >= 1

    # Something else fills the disk to the last byte: SQLite cannot write either. Manifests and
    # blobs are answered all the same.
    disks.fill(small_disk / "filler")
    manifest = await _get(f"{node.url}/v2/{TestImages.BIG}/manifests/{TestImages.TAG}")
    assert manifest[:2] == (200, image.digest)
    for blob in (image.config, *image.layers):
        status, digest, length = await _get(f"{node.url}/v2/{TestImages.BIG}/blobs/{blob.digest}")
        assert (status, digest, length) == (200, blob.digest, blob.size)
    assert _stored(node) == set()
    assert _logged_once(node, started)
    assert _server_errors(node) == 0


async def test_a_store_whose_disk_turns_read_only_still_serves_every_pull(
    small_disk: Path,
    node_factory: Callable[..., Node],
    upstream: Registry,
    test_images: TestImages,
) -> None:
    """Where blobs are written turns read-only (as a file system remounts itself after errors):
    manifests and blobs are answered all the same, streamed from the upstream, with one log
    line and a metric; no 500, no traceback."""
    node = _start(node_factory, upstream, small_disk)
    image = test_images.app.image()
    with disks.read_only(small_disk / "data" / "tmp", small_disk / "data" / "blobs"):
        manifest = await _get(f"{node.url}/v2/{TestImages.APP}/manifests/{TestImages.TAG}")
        assert manifest[:2] == (200, image.digest)
        for blob in (image.config, *image.layers):
            url = f"{node.url}/v2/{TestImages.APP}/blobs/{blob.digest}"
            assert await _get(url) == (200, blob.digest, blob.size)
    assert _stored(node) == set()
    assert _server_errors(node) == 0
    log = node.log_path.read_text(errors="replace")
    assert log.count("the store's disk is read-only") == 1
    assert "Traceback" not in log
    assert node.metric("distributed_images_store_errors_total", kind="read_only") >= 1


async def test_a_disk_that_fills_up_while_a_blob_comes_through_the_swarm_still_serves_it_whole(
    small_disk: Path,
    start_cluster: Callable[..., Cluster],
    p2p_upstream: Registry,
    p2p_images: P2PImages,
) -> None:
    """The chunk files libtorrent writes find the disk full: the node goes on from the upstream
    for its client at once (not after a stall timeout), says so once, and logs each chunk
    torrent's failure once (not once per block it could not write)."""
    started = time.monotonic()
    disks.fill(small_disk / "before", leave=24 << 20)  # the small image fits, with the reserve
    cluster = start_cluster(
        size=2,
        node_args={0: ["--upload-limit", "4MiB"], 1: ["--prefetch", "0"]},
        data_dirs={1: small_disk / "data"},
    )
    holder, node = cluster.nodes
    image = p2p_images.small.image()
    layer = max(image.layers, key=lambda blob: blob.size)
    async with client(PULL_TIMEOUT) as session:
        assert (await pull_image(session, holder, P2PImages.SMALL)).blobs == correct(
            p2p_images.small
        )
        mark = p2p_upstream.mark()
        pull = asyncio.ensure_future(pull_image(session, node, P2PImages.SMALL))
        await until(lambda: receiving(node, layer.digest) or pull.done(), "the layer arriving")
        disks.fill(small_disk / "filler")
        pulled = await pull
    assert pulled.blobs == correct(p2p_images.small)

    log = node.log_path.read_text(errors="replace")
    assert "chunk stalled" not in log
    assert log.count("chunk torrent failed") <= chunk_count(layer.size)
    assert layer.digest not in _stored(node)
    assert node.metric("distributed_images_store_errors_total", kind="disk_full") >= 1
    assert _logged_once(node, started)
    # What the swarm could not bring in, the upstream did: the layer, from where the disk filled.
    assert p2p_upstream.blob_fetches(layer.digest, since=mark)
