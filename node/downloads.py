"""One upstream fetch per blob, however many clients ask for it at once.

A `Download` pumps a blob from its source into a store writer; any number of readers follow
it and get each block as soon as it is on disk, so no client waits for the whole blob before
its first byte. The last HOLDBACK bytes are released only once the whole blob's digest is
verified: a client can never receive a complete response with wrong bytes; on a mismatch every
reader's transfer fails and nothing is stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from node.errors import ContentInvalid, UpstreamUnavailable
from node.store.backend import Segment
from node.store.contentstore import BlobInfo, BlobWriter, ContentStore

log = logging.getLogger(__name__)

HOLDBACK = 64 << 10
READ_BLOCK = 1 << 20
RESUMES = 3


class Stream(Protocol):
    """A blob's bytes from `start` on (the upstream client's `BlobStream` is one)."""

    size: int
    start: int

    def blocks(self) -> AsyncIterator[bytes]: ...


# Opens the blob's bytes from an offset on (the upstream client's `blob`, bound to a blob).
Source = Callable[[int], AbstractAsyncContextManager[Stream]]


class Download:
    def __init__(self, digest: str, store: ContentStore, source: Source) -> None:
        self.digest = digest
        self._store = store
        self._source = source
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

    async def run(self) -> None:
        try:
            await self._pump()
            assert self._writer is not None
            self.info = await self._writer.commit()
            log.info("blob stored", extra={"digest": self.digest, "bytes": self.info.size})
        except BaseException as e:
            if self._writer:
                self._writer.abort()
            self.error = (
                e if isinstance(e, Exception) else UpstreamUnavailable("download cancelled")
            )
            if isinstance(e, ContentInvalid):
                log.error(
                    "upstream sent bad content", extra={"digest": self.digest, "error": e.message}
                )
            if not isinstance(e, Exception):
                raise
        finally:
            self._notify()

    async def _pump(self) -> None:
        """Copy the source into the writer, resuming from the last byte when a transfer breaks."""
        failures = 0
        while self._writer is None or self._writer.accepted < self._writer.size:
            offset = self._writer.accepted if self._writer else 0
            try:
                async with self._source(offset) as stream:
                    writer = self._start(stream.size)
                    skip = offset - stream.start  # the source ignored our Range header
                    async for block in stream.blocks():
                        if skip > 0:
                            cut = min(skip, len(block))
                            block, skip = block[cut:], skip - cut
                        if block:
                            await writer.write(block)
                if writer.accepted < writer.size:
                    raise UpstreamUnavailable("upstream closed the transfer early")
            except UpstreamUnavailable as e:
                failures += 1
                if self._writer is None or failures > RESUMES:
                    raise
                log.warning(
                    "blob transfer broke, resuming",
                    extra={
                        "digest": self.digest,
                        "offset": self._writer.accepted,
                        "error": e.message,
                    },
                )

    def _start(self, size: int) -> BlobWriter:
        if self._writer is None:
            self._writer = self._store.begin(self.digest, size)
            self._writer.on_progress = self._notify
            self._notify()
        elif size != self._writer.size:
            raise ContentInvalid("blob size changed between transfers", {"digest": self.digest})
        return self._writer

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
                released = 0 if writer is None else min(writer.written, writer.size - HOLDBACK)
                if writer is None or position >= released:
                    await self._wait()
                    continue
                stop = min(end, released)
                segments = writer.segments(position, stop)
                if segments is None:
                    stop = min(stop, position + READ_BLOCK)
                    yield await writer.read(position, stop)
                else:
                    for segment in segments:
                        yield segment
                position = stop


class Downloads:
    """The downloads in flight, by digest. Owned by the event loop."""

    def __init__(self, store: ContentStore) -> None:
        self._store = store
        self._active: dict[str, Download] = {}

    def get(self, digest: str) -> Download | None:
        return self._active.get(digest)

    def start(self, digest: str, source: Source) -> Download:
        download = Download(digest, self._store, source)
        self._active[digest] = download
        download.task = asyncio.create_task(self._run(download), name=f"download {digest}")
        return download

    async def _run(self, download: Download) -> None:
        try:
            await download.run()
        finally:
            self._active.pop(download.digest, None)

    async def close(self) -> None:
        tasks = [d.task for d in self._active.values() if d.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
