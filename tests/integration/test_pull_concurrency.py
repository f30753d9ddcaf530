"""Many clients asking a node for the same cold blob at once: one upstream fetch serves them all."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter

import aiohttp
import pytest

from tests.support.images import TestImages
from tests.support.node import Node
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

CLIENTS = 50
CHUNK = 4 * 1024 * 1024  # the smallest chunk size of DESIGN section 2


async def _fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, str, int]:
    """(status, sha256 of the body, body length), hashing as the body streams in."""
    digest = hashlib.sha256()
    length = 0
    async with session.get(url) as response:
        try:
            async for block in response.content.iter_chunked(1 << 20):
                digest.update(block)
                length += len(block)
        except aiohttp.ClientPayloadError as e:
            return response.status, f"broken transfer: {type(e.__cause__).__name__}", length
        return response.status, "sha256:" + digest.hexdigest(), length


async def test_fifty_concurrent_gets_of_a_cold_blob_fetch_it_upstream_once(
    node: Node, upstream: Registry, test_images: TestImages
) -> None:
    layer = test_images.app.largest_layer()  # 8 MiB: long enough for the requests to overlap
    url = f"{node.url}/v2/{TestImages.APP}/blobs/{layer.digest}"
    mark = upstream.mark()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        results = await asyncio.gather(*(_fetch(session, url) for _ in range(CLIENTS)))
    fetches = [(f.status, f.written) for f in upstream.blob_fetches(layer.digest, since=mark)]
    # One fetch of every byte: the whole blob, or its chunks (4 MiB each) fetched by Range once.
    assert (Counter(results), sum(written for _, written in fetches)) == (
        {(200, layer.digest, layer.size): CLIENTS},
        layer.size,
    ), fetches
    assert len(fetches) <= -(-layer.size // CHUNK), fetches
    served = node.metric("distributed_images_blob_bytes_total")
    assert served == CLIENTS * layer.size
    assert node.metric("distributed_images_upstream_bytes_total") >= layer.size
