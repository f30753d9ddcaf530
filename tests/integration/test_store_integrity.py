"""Stored content that went bad is never served: found after an unclean stop, or by the scrub,
purged and fetched again from where it came, before any client asks for it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.integration.test_seed_node import LAYERS, _node
from tests.support import powerloss, skopeo
from tests.support.cluster import blob_directory, chunk_file, stored_bytes
from tests.support.images import TestImages, build_image
from tests.support.node import Node
from tests.support.process import wait_until
from tests.support.registry import Registry
from tests.unit.test_seed_import import layout_files, pack

pytestmark = pytest.mark.integration

DAMAGED = "distributed_images_damaged_blobs_total"
REFETCHES = "distributed_images_refetches_total"
VERIFIED = "distributed_images_verified_bytes_total"


def _scrubbed_and_fetched_again(node: Node, upstream: Registry, digest: str, mark: int) -> None:
    """The scrub found the blob damaged, and it was purged and fetched again, once."""
    wait_until(
        lambda: node.metric(REFETCHES, result="fetched") == 1,
        60,
        "the damaged blob fetched again",
        on_timeout=node.log_tail,
    )
    assert node.metric(DAMAGED, found_by="scrub") == 1
    assert len(upstream.blob_fetches(digest, since=mark)) == 1


@pytest.mark.parametrize("mode", powerloss.MODES)
def test_blobs_lost_before_they_were_synced_are_fetched_again_before_a_client_asks(
    node_factory: Callable[..., Node],
    upstream: Registry,
    test_images: TestImages,
    workdir: Path,
    mode: str,
) -> None:
    node = node_factory(
        {upstream.host: upstream.url},
        upstream.host,
        extra_args=["--no-fsync", "--scrub-rate", "0"],
    )
    image = test_images.app.image()
    reference = f"{TestImages.APP}:{TestImages.TAG}"
    skopeo.pull(node.host, reference, workdir / "before")
    # A client has a blob once it is verified, while the node still puts it in place.
    wait_until(lambda: all(blob_directory(node, d).is_dir() for d in image.blobs), 30, "all stored")
    node.kill()
    # A power loss takes the chunk files the node never synced: all of them, without --fsync.
    lost = powerloss.lose_unsynced(node.data_dir / "blobs", mode)
    for digest in image.blobs:
        assert any(digest.removeprefix("sha256:") in p.name for p in lost), digest

    mark = upstream.mark()
    node.start()
    # Before any client asks: each damaged blob is found, purged and fetched again, once.
    wait_until(
        lambda: node.metric(REFETCHES, result="fetched") == len(image.blobs),
        60,
        "every blob fetched again",
        on_timeout=node.log_tail,
    )
    for digest in image.blobs:
        assert len(upstream.blob_fetches(digest, since=mark)) == 1, digest
    assert node.metric(DAMAGED, found_by="recovery") >= len(image.blobs)
    served = len(upstream.entries(since=mark))

    out = skopeo.pull(node.host, f"{TestImages.APP}@{image.digest}", workdir / "after")
    assert skopeo.verify_dir(out) == image.blobs
    # The client got what the node had fetched again: no blob came from the upstream for it.
    assert [e for e in upstream.entries(since=mark)[served:] if e.is_blob()] == []
    for digest, size in image.blobs.items():
        assert hashlib.sha256(stored_bytes(node, digest, size)).hexdigest() == digest[7:]


def test_the_scrub_finds_a_damaged_blob_and_fetches_it_again(
    node_factory: Callable[..., Node],
    upstream: Registry,
    test_images: TestImages,
    workdir: Path,
) -> None:
    node = node_factory(
        {upstream.host: upstream.url},
        upstream.host,
        extra_args=["--scrub-rate", "64MiB", "--scrub-interval", "1"],
    )
    image = test_images.app.image()
    reference = f"{TestImages.APP}:{TestImages.TAG}"
    skopeo.pull(node.host, reference, workdir / "before")
    layer = max(image.layers, key=lambda blob: blob.size)
    # One byte of the layer's second chunk goes bad on disk, behind the node's back.
    chunk = chunk_file(node, layer.digest, 1)
    mark = upstream.mark()
    with chunk.open("r+b") as f:
        f.seek(12345)
        byte = f.read(1)
        f.seek(12345)
        f.write(bytes([byte[0] ^ 0x01]))

    _scrubbed_and_fetched_again(node, upstream, layer.digest, mark)
    assert node.metric(VERIFIED, reason="scrub") > 0
    others = [
        e for e in upstream.entries(since=mark) if e.is_blob() and not e.is_blob(layer.digest)
    ]
    assert others == [], "only the damaged blob is fetched again"
    assert stored_bytes(node, layer.digest, layer.size) == test_images.app.read_blob(layer.digest)

    served = len(upstream.entries(since=mark))
    out = skopeo.pull(node.host, f"{TestImages.APP}@{image.digest}", workdir / "after")
    assert skopeo.verify_dir(out) == image.blobs
    assert [e for e in upstream.entries(since=mark)[served:] if e.is_blob()] == []


async def test_a_chunk_file_cut_short_on_disk_breaks_the_transfer_rather_than_hanging_it(
    node_factory: Callable[..., Node],
    upstream: Registry,
    test_images: TestImages,
    workdir: Path,
) -> None:
    """A stored chunk file that lost its tail behind the node's back (the scrub has not come
    to it yet): a client asking for the blob gets a broken transfer, which it can retry, not a
    response that stops short of its length and keeps the client waiting for ever."""
    node = node_factory(
        {upstream.host: upstream.url}, upstream.host, extra_args=["--scrub-rate", "0"]
    )
    image = test_images.app.image()
    skopeo.pull(node.host, f"{TestImages.APP}:{TestImages.TAG}", workdir / "before")
    layer = max(image.layers, key=lambda blob: blob.size)
    chunk = chunk_file(node, layer.digest, 0)
    os.truncate(chunk, chunk.stat().st_size // 2)

    mark = upstream.mark()
    url = f"{node.url}/v2/{TestImages.APP}/blobs/{layer.digest}"
    timeout = aiohttp.ClientTimeout(sock_read=30)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert "blob transfer aborted" in node.log_path.read_text(errors="replace")
    # Found damaged there, it is purged and fetched again, before the scrub would come to it.
    _scrubbed_and_fetched_again(node, upstream, layer.digest, mark)
    assert stored_bytes(node, layer.digest, layer.size) == test_images.app.read_blob(layer.digest)


def test_a_damaged_seeded_blob_is_imported_again_from_its_archive(
    node_command: None, workdir: Path
) -> None:
    image = build_image(workdir / "src", "docker.io/test/seeded:1", LAYERS, seed="seeded")
    images_dir = workdir / "images"
    pack(layout_files(image.layout), images_dir / "seeded.tar")
    node = _node(
        workdir / "node", images_dir, None, "--scrub-rate", "64MiB", "--scrub-interval", "1"
    )
    node.start()
    try:
        layer = max(image.image().layers, key=lambda blob: blob.size)
        chunk = chunk_file(node, layer.digest, 0)
        with chunk.open("r+b") as f:  # one byte goes bad on disk
            f.seek(100)
            byte = f.read(1)
            f.seek(100)
            f.write(bytes([byte[0] ^ 0x01]))
        wait_until(
            lambda: (
                node.metric(REFETCHES, result="archive") == 1
                and blob_directory(node, layer.digest).exists()
            ),
            60,
            "the archive imported again",
            on_timeout=node.log_tail,
        )
        assert node.metric(DAMAGED, found_by="scrub") == 1
        wait_until(
            lambda: stored_bytes(node, layer.digest, layer.size) == image.read_blob(layer.digest),
            30,
            "the layer whole again",
            on_timeout=node.log_tail,
        )
        # No upstream at all: the node serves the image whole from what it imported again.
        out = skopeo.pull(node.host, "test/seeded:1", workdir / "out")
        assert skopeo.verify_dir(out) == image.image().blobs
    finally:
        node.stop()


@pytest.mark.parametrize("damage", ["cut_short", "overwritten"])
def test_a_node_whose_metadata_is_damaged_starts_and_serves_its_blobs_again(
    node_factory: Callable[..., Node],
    upstream: Registry,
    test_images: TestImages,
    workdir: Path,
    damage: str,
) -> None:
    """The metadata database damaged on disk (a torn write, a bad sector): the node would not
    start (a traceback, 'database disk image is malformed'). It sets the damaged file aside and
    records its blobs again from their files, each verified before it is served."""
    node = node_factory({upstream.host: upstream.url}, upstream.host)
    image = test_images.app.image()
    skopeo.pull(node.host, f"{TestImages.APP}@{image.digest}", workdir / "before")
    node.stop()
    database = node.data_dir / "metadata.sqlite"
    size = database.stat().st_size
    with database.open("r+b") as f:
        if damage == "cut_short":
            f.truncate(1000)
        else:
            f.seek(0)
            f.write(os.urandom(size))
    mark = upstream.mark()
    node.start()
    out = skopeo.pull(node.host, f"{TestImages.APP}@{image.digest}", workdir / "after")
    assert skopeo.verify_dir(out) == image.blobs
    assert [e for e in upstream.entries(since=mark) if e.is_blob()] == []  # all from the store
    assert node.metric(VERIFIED, reason="recovery") > 0
    aside = list(node.data_dir.glob("metadata.sqlite.damaged-*"))
    assert len(aside) == 1 and aside[0].stat().st_size == (1000 if damage == "cut_short" else size)
    assert node.log_path.read_text().count("the store's metadata was damaged") == 1
