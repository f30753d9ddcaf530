"""An upstream that sends wrong bytes for a digest: the node never passes them on as a complete
response and never keeps them."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable

import aiohttp
import pytest

from tests.support.fakeupstream import FakeBlob, FakeUpstream, Fault
from tests.support.node import Node

pytestmark = pytest.mark.integration

SIZE = 6 * 1024 * 1024 + 12345  # two chunks, the second partial
STALL_TIMEOUT = 3  # seconds: the node's --upstream-timeout where an upstream stalls


@pytest.fixture
def fake_node(node_factory: Callable[..., Node], fake_upstream: FakeUpstream) -> Node:
    return node_factory({fake_upstream.host: fake_upstream.url}, fake_upstream.host)


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, bool]:
    """(status, body received, whether the transfer completed by its own framing)."""
    received = bytearray()
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, headers=headers) as response,
    ):
        try:
            async for block in response.content.iter_chunked(1 << 20):
                received += block
        except aiohttp.ClientPayloadError:
            return response.status, bytes(received), False
        return response.status, bytes(received), True


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def test_wrong_bytes_from_upstream_are_never_served_whole_nor_stored(
    fake_node: Node, fake_upstream: FakeUpstream
) -> None:
    data = random.Random("flipped").randbytes(SIZE)
    digest = fake_upstream.add(FakeBlob(data, fault=Fault.FLIPPED))
    url = f"{fake_node.url}/v2/test/bad/blobs/{digest}"
    for attempt in (1, 2):
        status, body, complete = await _get(url)
        if status == 200 and complete:
            assert _sha256(body) == digest, f"attempt {attempt}: a whole response of wrong bytes"
        # Either an error status before any byte, or a transfer that breaks: never wrong bytes
        # handed over as a finished blob.
        assert status in (200, 502, 503) and not (status == 200 and complete), (status, complete)
        await _until_no_temporary_files(fake_node, digest)
        assert fake_node.stored_paths(digest) == [], "bad bytes kept in the data dir"
    # The second request went upstream again: nothing was cached from the first.
    assert len(fake_upstream.blob_gets(digest)) >= 2
    assert fake_node.metric("distributed_images_blob_bytes_total") < 2 * SIZE


async def test_a_body_cut_short_by_upstream_is_resumed_or_fails_but_is_never_cut_short(
    fake_node: Node, fake_upstream: FakeUpstream
) -> None:
    """The upstream announces the whole length and drops the connection half-way (every time).
    The node may resume with Range requests; what it hands on is all of it or a broken transfer."""
    data = random.Random("truncated").randbytes(SIZE)
    digest = fake_upstream.add(FakeBlob(data, fault=Fault.TRUNCATED))
    url = f"{fake_node.url}/v2/test/bad/blobs/{digest}"
    status, body, complete = await _get(url)
    if status == 200 and complete:
        assert _sha256(body) == digest
    else:
        assert status in (200, 502, 503), status
        await _until_no_temporary_files(fake_node, digest)
        assert fake_node.stored_paths(digest) == [], "a partial blob kept in the data dir"


async def test_a_body_that_stops_half_way_is_resumed_after_the_upstream_timeout(
    node_factory: Callable[..., Node], fake_upstream: FakeUpstream
) -> None:
    """The first transfer sends half the blob, then nothing, its connection open: the node
    gives up on it after --upstream-timeout and asks for the rest; the client gets all of it."""
    node = node_factory(
        {fake_upstream.host: fake_upstream.url}, fake_upstream.host,
        extra_args=["--upstream-timeout", str(STALL_TIMEOUT)],
    )  # fmt: skip
    data = random.Random("stalled").randbytes(SIZE)
    digest = fake_upstream.add(FakeBlob(data, fault=Fault.STALLED))
    status, body, complete = await _get(f"{node.url}/v2/test/bad/blobs/{digest}")
    assert (status, complete, _sha256(body)) == (200, True, digest)
    first, second = fake_upstream.blob_gets(digest)
    assert (first.range, second.range) == (None, f"bytes={SIZE // 2}-")


async def test_a_later_good_upstream_answer_is_served_and_stored(
    fake_node: Node, fake_upstream: FakeUpstream
) -> None:
    """After a bad transfer, the same digest from a healthy upstream comes through whole."""
    data = random.Random("heal").randbytes(SIZE)
    bad = FakeBlob(data, fault=Fault.FLIPPED)
    digest = fake_upstream.add(bad)
    url = f"{fake_node.url}/v2/test/bad/blobs/{digest}"
    status, _, complete = await _get(url)
    assert not (status == 200 and complete)
    fake_upstream.add(FakeBlob(data))  # the upstream is repaired
    status, body, complete = await _get(url)
    assert (status, complete, _sha256(body)) == (200, True, digest)
    gets = len(fake_upstream.blob_gets(digest))
    status, body, complete = await _get(url)  # now from the node's store
    assert (status, complete, _sha256(body)) == (200, True, digest)
    assert len(fake_upstream.blob_gets(digest)) == gets


async def _until_no_temporary_files(node: Node, digest: str, timeout: float = 5.0) -> None:
    """A broken download's temporary files go away a moment after the client sees the break."""
    deadline = asyncio.get_running_loop().time() + timeout
    while node.stored_paths(digest) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


async def test_a_range_of_a_cold_blob_gets_only_verified_bytes(
    fake_node: Node, fake_upstream: FakeUpstream
) -> None:
    """A range of a blob still arriving waits for the whole blob's digest check: wrong bytes
    from the upstream are answered with an error, not with a 206 of them."""
    data = random.Random("range").randbytes(SIZE)
    digest = fake_upstream.add(FakeBlob(data, fault=Fault.FLIPPED))
    url = f"{fake_node.url}/v2/test/bad/blobs/{digest}"
    for header in ("bytes=0-99", "bytes=100-", f"bytes={SIZE // 2 - 10}-{SIZE // 2 + 10}"):
        status, body, _ = await _get(url, {"Range": header})
        assert status == 502, (header, status)
        assert b"DIGEST_INVALID" in body
        assert data[:50] not in body and data[-50:] not in body
        await _until_no_temporary_files(fake_node, digest)
        assert fake_node.stored_paths(digest) == []
    assert len(fake_upstream.blob_gets(digest)) >= 3  # each try went upstream again
    fake_upstream.add(FakeBlob(data))  # repaired: the range is served, and the blob kept
    status, body, complete = await _get(url, {"Range": "bytes=100-199"})
    assert (status, complete, body) == (206, True, data[100:200])
    gets = len(fake_upstream.blob_gets(digest))
    status, body, complete = await _get(url, {"Range": "bytes=-10"})
    assert (status, complete, body) == (206, True, data[-10:])
    assert len(fake_upstream.blob_gets(digest)) == gets
