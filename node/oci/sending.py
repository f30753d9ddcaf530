"""Sending a response's body to a client that may stop reading it (DESIGN section 10: clients
are untrusted): a slice at a time, each one the client must take in time, from the stored file
where there is one, so that a stalled client holds neither its connection nor the node's memory
for long."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import BinaryIO, TypeVar

from aiohttp import web

from node.blobs import BlobHandle
from node.errors import NodeError
from node.store.backend import Segment

log = logging.getLogger(__name__)

# A client that takes less than a slice of a response in this long is cut off (its transfer
# breaks; it may resume with a Range): one that stopped reading held its connection, and a file
# and the blob (kept from eviction) or the response's bytes, for as long as it liked. A client
# reading at 17 KB/s or more is never cut off.
SEND_STALL_SECONDS = 60.0
SEND_SLICE = 1 << 20


# Bytes, or a file segment with its file already open.
_Piece = bytes | tuple[BinaryIO, Segment]
_T = TypeVar("_T")


async def transfer(
    request: web.Request,
    response: web.StreamResponse,
    body: AsyncIterator[bytes | Segment],
    what: str,
    sent: Callable[[int, int], None] | None = None,
    handle: BlobHandle | None = None,
    start: int = 0,
) -> bool:
    """Send `body` (`what`: from `start` of `handle`, where it comes from a blob) as `response`'s,
    `sent(position, length)` after each piece; whether all of it went. A transfer that fails
    once begun is broken off; a client that stops reading is cut off (ClientStalled)."""
    pieces = opened(body)
    try:
        # The first bytes come before the status line: a download that fails before them
        # (a size that is not the blob's, bad content, an upstream gone) is answered with
        # its error, not with a transfer that breaks.
        piece = await anext(pieces, None)
        await response.prepare(request)
        position = start
        try:
            while piece is not None:
                if isinstance(piece, bytes):
                    await taken(response.write(piece))
                    length = len(piece)
                elif request.transport is not None:
                    length = await send_segment(request.transport, handle, *piece)
                else:
                    raise ConnectionResetError("client went away")
                if sent is not None:
                    sent(position, length)
                position += length
                piece = await anext(pieces, None)
            await taken(response.write_eof())
            return True
        except (NodeError, OSError) as e:
            # The status line is gone: the only honest signal left is a broken transfer.
            extra = {"error": str(e)}
            if digest := response.headers.get("Docker-Content-Digest"):
                extra["digest"] = digest
            log.warning(f"{what} transfer aborted", extra=extra)
            if request.transport is not None:
                request.transport.abort()
            return False
    finally:
        await pieces.aclose()


async def send_segment(
    transport: asyncio.Transport, handle: BlobHandle | None, file: BinaryIO, segment: Segment
) -> int:
    """Send a file segment with sendfile, a slice at a time; the bytes sent. A stored blob the
    disk fails to read, or whose file ends early, is doubted (checked, and purged if damaged)."""
    loop = asyncio.get_running_loop()
    offset, end = segment.offset, segment.offset + segment.length
    while offset < end:
        count = min(SEND_SLICE, end - offset)
        try:
            sent = await taken(loop.sendfile(transport, file, offset, count))
        except OSError as e:
            if e.errno == errno.EIO and handle and handle.info:  # the disk, not the peer
                handle.store.doubt(handle.digest)
            raise
        if sent != count:  # the file ends early: sendfile stops, silently
            if handle and handle.info:
                handle.store.doubt(handle.digest)
            raise OSError(errno.EIO, f"{segment.path} is shorter than the blob says")
        offset += count
    return segment.length


async def taken(sending: Awaitable[_T]) -> _T:
    """What `sending` returns, once the client took it; ClientStalled when it has not within
    SEND_STALL_SECONDS."""
    try:
        return await asyncio.wait_for(sending, SEND_STALL_SECONDS)
    except TimeoutError:
        stalled = f"the client took under {SEND_SLICE >> 20} MiB in {SEND_STALL_SECONDS:.0f} s"
        raise ClientStalled(stalled) from None


class ClientStalled(ConnectionError):
    """A client stopped reading a response."""


async def send_bytes(
    request: web.Request, response: web.StreamResponse, body: bytes, what: str
) -> web.StreamResponse:
    """`response`, its body `body` sent a slice at a time (a document held in memory); only
    the head for a HEAD (aiohttp would write a stream's body there too)."""
    response.content_length = len(body)
    if request.method == "HEAD":
        await response.prepare(request)
        await response.write_eof()
    else:
        await transfer(request, response, slices(body), what)
    return response


async def slices(body: bytes) -> AsyncIterator[bytes]:
    """`body` a slice at a time, each one the client must take within SEND_STALL_SECONDS."""
    view = memoryview(body)
    for offset in range(0, len(body), SEND_SLICE):
        yield bytes(view[offset : offset + SEND_SLICE])


async def opened(pieces: AsyncIterator[bytes | Segment]) -> AsyncGenerator[_Piece, None]:
    """The pieces, each segment's file opened as it comes: it must be opened before the next
    await (the blob's directory moves when it is committed, or is evicted), and stays open
    until the next piece is asked for."""
    async for piece in pieces:
        if isinstance(piece, Segment):
            with open(piece.path, "rb") as file:
                yield file, piece
        else:
            yield piece
