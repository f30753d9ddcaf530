"""A blob's bytes as the upstream client streams them, from a registry in-process: blocks start
small, so a client following a cold download gets its first byte without waiting for a whole
STREAM_BLOCK to arrive, and grow to STREAM_BLOCK, so the rest costs few hops per byte."""

from __future__ import annotations

import hashlib
import random

from aiohttp import web
from aiohttp.test_utils import TestServer

from node.metrics import NodeMetrics
from node.upstream.auth import Authenticator, Credentials
from node.upstream.client import BLOB_RECEIVE, FIRST_BLOCK, STREAM_BLOCK, UpstreamClient
from node.upstream.registries import Upstream

SIZE = 24 << 20


async def test_blocks_start_small_and_grow_to_the_stream_block() -> None:
    data = random.Random("blocks").randbytes(SIZE)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    async def blob(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(SIZE)})
        await response.prepare(request)
        for offset in range(0, SIZE, 64 << 10):
            await response.write(data[offset : offset + (64 << 10)])
        return response

    app = web.Application()
    app.router.add_get("/v2/repo/blobs/{digest}", blob)
    async with TestServer(app, host="127.0.0.1") as server:
        upstream = Upstream("registry", str(server.make_url("")).rstrip("/"), configured=True)
        client = UpstreamClient(Authenticator(Credentials()), NodeMetrics())
        async with client, client.blob(upstream, "repo", digest) as stream:
            blocks = [b"".join(block) async for block in stream.blocks()]
    assert b"".join(blocks) == data
    sizes = [len(block) for block in blocks]
    assert sizes[0] < FIRST_BLOCK + BLOB_RECEIVE
    assert max(sizes) >= STREAM_BLOCK
    target = FIRST_BLOCK
    for size in sizes[:-1]:  # each block gathers at least its target, which doubles
        assert size >= target
        target = min(STREAM_BLOCK, 2 * target)
