"""One fetch per blob, however many clients ask for it at once.

A `Download` runs a `Fill` (from upstream as one stream, or chunk by chunk through the swarm)
into a store writer; any number of readers follow it and get each part as soon as it is hashed
and in its file, so no client waits for the whole blob before its first byte. The last HOLDBACK
bytes are released only once the whole blob's digest is verified: a client can never receive a
complete response with wrong bytes; on a mismatch every reader's transfer fails and nothing is
stored. They are released as soon as it is verified, while the blob is still being put on disk
(fsync) and published: the client has the right bytes either way.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from distributed_images.settings import parse_size
from node.errors import BlobTooLarge, ContentInvalid, UpstreamUnavailable
from node.store.backend import Segment
from node.store.contentstore import BlobInfo, BlobWriter, ContentStore

log = logging.getLogger(__name__)

HOLDBACK = 64 << 10
DEFAULT_MAX_SIZE = 64 << 30  # 4096 chunks of 16 MiB: a pull's chunk state is about 2 MB
LARGEST_MAX_SIZE = 1 << 40  # 65536 chunks, as many as the tracker places for one blob
READ_BLOCK = 1 << 20
RESUMES = 3  # transfers in a row that broke before bringing a byte; then the fetch fails
MAX_RESUMES = 32  # resumes of one transfer in all, so requests per blob stay bounded
RESUME_BACKOFF = 0.5  # seconds before the first resume after a transfer that brought nothing
COMMIT_GRACE = 2.0  # seconds a stopping node gives a verified blob to go into place


class Stream(Protocol):
    """A blob's bytes from `start` on (the upstream client's `BlobStream` is one)."""

    size: int
    start: int
    received: int  # bytes read off the connection so far, yielded or not

    def blocks(self) -> AsyncIterator[list[bytes]]:
        """Runs of the bytes, each a list of the pieces they arrived in (never copied)."""
        ...


class Resumes:
    """When a broken upstream transfer is tried again. One that brought bytes is resumed at
    once from the first byte missing, so a break costs only what was in flight; one that
    brought nothing waits a backoff, doubling, and after RESUMES such breaks in a row the
    error stands: the upstream is down, not slow. MAX_RESUMES bounds the requests in all."""

    def __init__(self, on_resume: Callable[[], None] | None = None) -> None:
        self._failures = 0
        self._resumes = 0
        self._on_resume = on_resume

    async def after(self, error: UpstreamUnavailable, progressed: bool) -> None:
        """Return when the transfer may be resumed; raise `error` when it may not."""
        self._failures = 0 if progressed else self._failures + 1
        self._resumes += 1
        if self._failures > RESUMES or self._resumes > MAX_RESUMES:
            raise error
        if self._on_resume is not None:
            self._on_resume()
        if self._failures:
            delay = RESUME_BACKOFF * 2 ** (self._failures - 1)
            await asyncio.sleep(delay * (0.5 + random.random()))


# Opens the blob's bytes [start, end) (end None: to the end); the upstream client's `blob`
# bound to one blob.
Source = Callable[[int, int | None], AbstractAsyncContextManager[Stream]]
# Creates the store writer once the blob's size is known.
Begin = Callable[[int], BlobWriter]


class Fill(Protocol):
    """How a download's bytes get into the writer."""

    def source_at(self, offset: int) -> str:
        """The `blob_bytes_total` source label of the byte at `offset`."""
        ...

    async def run(self, begin: Begin) -> BlobWriter:
        """Call `begin(size)` once, put every byte into that writer, return it."""
        ...

    async def committed(self, info: BlobInfo) -> None:
        """The blob is verified and in the store."""
        ...

    async def failed(self, error: BaseException) -> None:
        """The blob was not stored: `error` is why (bad content, a failure, cancellation)."""
        ...


def parse_max_size(text: str) -> int:
    """`--max-blob-size`: a size from 1 byte to LARGEST_MAX_SIZE."""
    size = parse_size(text)
    if not 0 < size <= LARGEST_MAX_SIZE:
        raise ValueError(f"not between 1 byte and 1TiB (the largest blob a cluster places): {text}")
    return size


def checked_size(digest: str, size: int, max_size: int) -> int:
    if size > max_size:
        raise BlobTooLarge(
            f"a blob of {size} bytes is larger than this node fetches (--max-blob-size"
            f" {max_size}): pull it from the registry itself",
            {"digest": digest, "size": size},
        )
    return size


class UpstreamFill:
    """The blob as one upstream stream, resumed from the last byte when a transfer breaks."""

    def __init__(
        self,
        digest: str,
        source: Source,
        after: Callable[[BlobInfo], Awaitable[None]] | None = None,
        on_resume: Callable[[], None] | None = None,
    ) -> None:
        self._digest = digest
        self._source = source
        self._after = after
        self._on_resume = on_resume

    def source_at(self, offset: int) -> str:
        return "upstream"

    async def run(self, begin: Begin) -> BlobWriter:
        writer: BlobWriter | None = None
        resumes = Resumes(self._on_resume)
        while writer is None or writer.accepted < writer.size:
            offset = writer.accepted if writer else 0
            try:
                async with self._source(offset, None) as stream:
                    if writer is None:
                        writer = begin(stream.size)
                    elif stream.size != writer.size:
                        raise ContentInvalid("blob size changed between transfers")
                    await copy(stream, writer, offset)
            except UpstreamUnavailable as e:
                if writer is None:
                    raise
                await resumes.after(e, progressed=writer.accepted > offset)
                log.warning(
                    "blob transfer broke, resuming",
                    extra={"digest": self._digest, "offset": writer.accepted, "error": e.message},
                )
        return writer

    async def committed(self, info: BlobInfo) -> None:
        if self._after is not None:
            await self._after(info)

    async def failed(self, error: BaseException) -> None:
        pass


async def blocks_between(stream: Stream, start: int, end: int) -> AsyncIterator[list[bytes]]:
    """The stream's bytes [start, end), as its blocks of pieces; a stream that ignored the Range
    header (it starts before `start`) is skipped forward. Raises if the stream ends early."""
    position = stream.start
    async for block in stream.blocks():
        kept = []
        for piece in block:
            if position < start:
                cut = min(start - position, len(piece))
                piece, position = piece[cut:], position + cut
            piece = piece[: end - position]
            if piece:
                kept.append(piece)
                position += len(piece)
        if kept:
            yield kept
        if position >= end:
            return
    raise UpstreamUnavailable("upstream closed the transfer early")


async def copy(stream: Stream, writer: BlobWriter, offset: int) -> None:
    """Append the stream's bytes from `offset` to the end of the blob to the writer."""
    async for block in blocks_between(stream, offset, writer.size):
        await writer.write(*block)


class Download:
    def __init__(
        self, digest: str, store: ContentStore, fill: Fill, max_size: int = DEFAULT_MAX_SIZE
    ) -> None:
        self.digest = digest
        self.fill = fill
        self._store = store
        self._max_size = max_size
        self._writer: BlobWriter | None = None
        self._changed = asyncio.Event()
        self.info: BlobInfo | None = None
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self) -> None:
        changed = self._changed
        if self.error is not None:
            raise self.error
        await changed.wait()
        if self.error is not None:
            raise self.error

    def _begin(self, size: int) -> BlobWriter:
        if self._writer is not None:
            raise RuntimeError("a fill began twice")
        self._writer = self._store.begin(
            self.digest, checked_size(self.digest, size, self._max_size)
        )
        self._writer.on_progress = self._notify
        self._notify()
        return self._writer

    async def run(self) -> None:
        try:
            writer = await self.fill.run(self._begin)
            self.info = await writer.commit()
            self._notify()  # readers need not wait for the seeding that follows
            log.info("blob stored", extra={"digest": self.digest, "bytes": self.info.size})
            await self.fill.committed(self.info)
        except BaseException as e:
            if self._writer and self.info is None:
                self._writer.abort()
            self.error = (
                e if isinstance(e, Exception) else UpstreamUnavailable("download cancelled")
            )
            if isinstance(e, ContentInvalid):
                log.error("bad content", extra={"digest": self.digest, "error": e.message})
            if self.info is None:
                await asyncio.shield(self.fill.failed(e))
            if not isinstance(e, Exception):
                raise
        finally:
            self._notify()

    @property
    def committing(self) -> bool:
        """Every byte is in and verified; the blob is being put on disk and published."""
        return self._writer is not None and self._writer.verified and self.info is None

    async def stored(self) -> BlobInfo:
        """The blob once it is verified and stored; raises the download's error."""
        while self.info is None:
            await self._wait()
        return self.info

    async def size(self) -> int:
        while self._writer is None:
            if self.info is not None:
                return self.info.size
            await self._wait()
        return self._writer.size

    async def read(self, start: int, end: int) -> AsyncIterator[bytes | Segment]:
        """Bytes [start, end) as they arrive, as byte blocks or file segments (open a segment
        before the next await); raises the download's error if it fails."""
        position = start
        with self._store.using(self.digest):
            while position < end:
                if self.info is not None:
                    async for piece in self._store.pieces(self.info, position, end):
                        yield piece
                    return
                writer = self._writer
                released = 0 if writer is None else _released(writer)
                if writer is None or position >= released:
                    await self._wait()
                    continue
                stop = min(end, released)
                segments = writer.segments(position, stop)
                if segments is None:
                    stop = min(stop, position + READ_BLOCK)
                    yield await writer.read(position, stop)
                    position = stop
                else:
                    # One at a time: the blob's directory moves when it is committed, so a
                    # segment's path is good only until the consumer's next await.
                    yield segments[0]
                    position += segments[0].length


def _released(writer: BlobWriter) -> int:
    """How much of a blob being written its readers may have: all of it once its digest is
    verified, until then all but the last HOLDBACK bytes written."""
    return writer.size if writer.verified else min(writer.written, writer.size - HOLDBACK)


class Downloads:
    """The downloads in flight, by digest. Owned by the event loop.

    At most `parallel` run at once: a download past them waits for one to end before it fetches
    anything, so no number of requests for distinct cold blobs makes this node fetch more than
    that many blobs at once.
    """

    def __init__(
        self, store: ContentStore, max_size: int = DEFAULT_MAX_SIZE, parallel: int = 16
    ) -> None:
        self._store = store
        self._max_size = max_size
        self._slots = asyncio.Semaphore(parallel)
        self._active: dict[str, Download] = {}

    def get(self, digest: str) -> Download | None:
        return self._active.get(digest)

    def check_size(self, digest: str, size: int) -> int:
        """`size`, unless it is beyond the largest blob this node fetches (BlobTooLarge)."""
        return checked_size(digest, size, self._max_size)

    def start(self, digest: str, fill: Fill) -> Download:
        download = Download(digest, self._store, fill, self._max_size)
        self._active[digest] = download
        download.task = asyncio.create_task(self._run(download), name=f"download {digest}")
        return download

    async def _run(self, download: Download) -> None:
        try:
            async with self._slots:
                await download.run()
        finally:
            self._active.pop(download.digest, None)

    async def close(self) -> None:
        """Cancel the downloads still bringing bytes in. One whose bytes are all in and verified
        is let go into place first (for COMMIT_GRACE at most): its clients may have it whole
        already, and a node stopped cleanly keeps what it served."""
        active = [d for d in self._active.values() if d.task is not None]
        in_place = [asyncio.ensure_future(d.stored()) for d in active if d.committing]
        for download in active:
            if download.task is not None and not download.committing:
                download.task.cancel()
        if in_place:
            await asyncio.wait(in_place, timeout=COMMIT_GRACE)
            for waiting in in_place:
                waiting.cancel()
            await asyncio.gather(*in_place, return_exceptions=True)
        tasks = [d.task for d in active if d.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
