"""A node stopped or killed comes back with its complete content intact, and a download it was
in the middle of when killed never turns into a partial blob. A power loss after the kill (every
file whose pages were not yet written back loses its content: `tests.support.powerloss`) takes
nothing the node had called stored."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.support import cluster, powerloss, skopeo
from tests.support.fakeupstream import FakeBlob, FakeUpstream
from tests.support.images import TestImages, push
from tests.support.node import Node
from tests.support.process import wait_until
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

SIZE = 20 * 1024 * 1024 + 777  # five 4 MiB chunks and a bit
STORED = 9 * 1024 * 1024 + 333  # three 4 MiB chunks: stored whole before the crash
SLOW = 4 * 1024 * 1024  # bytes per second from the upstream, until the node is killed


async def _stream(url: str, progress: list[int]) -> tuple[int, str, bool]:
    """(status, sha256 of what arrived, completed); `progress[0]` counts bytes as they come."""
    digest = hashlib.sha256()
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        try:
            async for block in response.content.iter_chunked(64 * 1024):
                digest.update(block)
                progress[0] += len(block)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            return response.status, "sha256:" + digest.hexdigest(), False
        return response.status, "sha256:" + digest.hexdigest(), True


async def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"{what} not true after {timeout} s"
        await asyncio.sleep(0.02)


async def test_node_killed_mid_download_never_serves_a_partial_blob_after_restart(
    node_factory: Callable[..., Node], fake_upstream: FakeUpstream
) -> None:
    data = random.Random("crash").randbytes(SIZE)
    digest = fake_upstream.add(FakeBlob(data, rate=SLOW))
    node = node_factory({fake_upstream.host: fake_upstream.url}, fake_upstream.host)
    url = f"{node.url}/v2/test/crash/blobs/{digest}"

    progress = [0]
    client = asyncio.create_task(_stream(url, progress))
    # Kill once the upstream has sent a few chunks and the client is receiving.
    await _wait_for(lambda: fake_upstream.bytes_sent(digest) >= 9 * 1024 * 1024, 30, "9 MiB sent")
    await _wait_for(lambda: progress[0] > 0, 30, "client receiving")
    node.kill()
    status, _, complete = await asyncio.wait_for(client, 30)
    assert (status, complete) == (200, False), "the client must see the transfer break"
    sent_before = fake_upstream.bytes_sent(digest)
    assert sent_before < SIZE, "the download finished before the kill: the test proves nothing"

    fake_upstream.set_rate(digest, None)
    node.start()
    # Nothing of the blob may be visible as complete: the store holds no partial blob.
    head_gets = len(fake_upstream.blob_gets(digest))
    status, received, complete = await _stream(url, [0])
    assert (status, received, complete) == (200, digest, True)
    assert len(fake_upstream.blob_gets(digest)) > head_gets, "served without fetching again"
    fetched_again = fake_upstream.bytes_sent(digest) - sent_before
    assert fetched_again > 0
    # And now it is stored whole: a third request does not go upstream.
    gets = len(fake_upstream.blob_gets(digest))
    assert await _stream(url, [0]) == (200, digest, True)
    assert len(fake_upstream.blob_gets(digest)) == gets


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_restarted_node_serves_its_complete_content_without_the_upstream(
    node_factory: Callable[..., Node],
    registry_factory: Callable[..., Registry],
    test_images: TestImages,
    workdir: Path,
    stop: str,
) -> None:
    origin = registry_factory(name="origin")
    push(test_images.app, origin.host, f"{TestImages.APP}:1")
    node = node_factory({origin.host: origin.url}, origin.host)
    skopeo.pull(node.host, f"{TestImages.APP}:1", workdir / "before")
    if stop == "sigterm":  # a blob its client has whole goes into place before the node exits
        assert node.stop() == 0, "a node must exit cleanly on SIGTERM"
    else:  # a crash loses one that was not in place yet: it is fetched again when asked for
        blobs = test_images.app.image().blobs
        wait_until(
            lambda: all(cluster.blob_directory(node, d).is_dir() for d in blobs),
            30,
            "every blob in place",
        )
        node.kill()
    origin.stop()
    node.start()
    reference = f"{TestImages.APP}@{test_images.app.digest}"
    out = skopeo.pull(node.host, reference, workdir / "after")
    assert skopeo.verify_dir(out) == test_images.app.image().blobs
    image = test_images.app.image()
    assert node.metric("distributed_images_blob_bytes_total", source="cache") == image.blob_bytes
    assert node.metric("distributed_images_upstream_bytes_total") == 0


@pytest.mark.parametrize("mode", powerloss.MODES)
async def test_power_loss_after_a_crash_never_serves_lost_bytes(
    node_factory: Callable[..., Node], fake_upstream: FakeUpstream, mode: str
) -> None:
    rng = random.Random(f"power loss {mode}")
    stored, in_flight = rng.randbytes(STORED), rng.randbytes(SIZE)
    stored_digest = fake_upstream.add(FakeBlob(stored))
    in_flight_digest = fake_upstream.add(FakeBlob(in_flight, rate=SLOW))
    node = node_factory({fake_upstream.host: fake_upstream.url}, fake_upstream.host)
    url = f"{node.url}/v2/test/power/blobs/"

    assert await _stream(url + stored_digest, [0]) == (200, stored_digest, True)
    await cluster.stored(node, stored_digest)  # its client had it before it was on disk
    progress = [0]
    client = asyncio.create_task(_stream(url + in_flight_digest, progress))
    await _wait_for(lambda: fake_upstream.bytes_sent(in_flight_digest) >= 9 << 20, 30, "9 MiB")
    await _wait_for(lambda: progress[0] > 0, 30, "the client receiving")
    node.kill()
    await asyncio.wait_for(client, 30)
    assert fake_upstream.bytes_sent(in_flight_digest) < SIZE, "finished before the kill"

    # What the kernel had not written back is lost. (It may have written back more than this
    # test's own pages on its own, when the machine's dirty memory runs high: a power loss then
    # takes less, and the node must do just as well.)
    powerloss.lose_unsynced(node.data_dir, mode)
    fake_upstream.set_rate(in_flight_digest, None)
    gets = {d: len(fake_upstream.blob_gets(d)) for d in (stored_digest, in_flight_digest)}
    node.start()

    # The client gets the right bytes, whatever the power loss took.
    assert await _stream(url + stored_digest, [0]) == (200, stored_digest, True)
    assert await _stream(url + in_flight_digest, [0]) == (200, in_flight_digest, True)
    # The blob stored whole was on disk before it was called stored: not fetched again. The one
    # in flight was never stored: fetched again.
    assert len(fake_upstream.blob_gets(stored_digest)) == gets[stored_digest]
    assert len(fake_upstream.blob_gets(in_flight_digest)) > gets[in_flight_digest]
    assert node.metric("distributed_images_blob_bytes_total", source="cache") == STORED
    # And the store holds both, whole.
    await cluster.stored(node, in_flight_digest)
    assert cluster.stored_bytes(node, stored_digest, STORED) == stored
    assert cluster.stored_bytes(node, in_flight_digest, SIZE) == in_flight
    # Nothing of the interrupted write is left but links to where blobs went since.
    assert [p for p in (node.data_dir / "tmp").iterdir() if not p.is_symlink()] == []


def test_the_power_loss_model_takes_only_files_not_synced(tmp_path: Path) -> None:
    synced, unsynced = tmp_path / "synced", tmp_path / "unsynced"
    for path in (synced, unsynced):
        with path.open("wb") as f:
            f.write(b"x" * 100_000)
            if path is synced:
                f.flush()
                os.fsync(f.fileno())
    assert powerloss.lose_unsynced(tmp_path, "zeroed") == [unsynced]
    assert synced.read_bytes() == b"x" * 100_000
    assert unsynced.read_bytes() == bytes(100_000)
