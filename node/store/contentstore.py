"""The content store: every blob verified before it is visible, LRU eviction under a quota.

Writes follow one order: temporary area, hash while writing, check size then digest, atomic
publish, then metadata. A blob that already exists counts as written. Nothing is served that
skipped this path. The bytes live in a backend (chunk files on disk, or memory for tests); the
logic here is shared by both.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from node.errors import BlobUnknown, ContentInvalid
from node.store.backend import BlobBackend, PendingBlob, Segment
from node.store.disk import DiskBlobs
from node.store.memory import MemoryBlobs
from node.store.metadata import Metadata, TagRecord

log = logging.getLogger(__name__)

READ_BLOCK = 1 << 20
IN_FLIGHT = 16 << 20  # bytes a writer may queue ahead of its thread


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int
    media_type: str | None


class BlobWriter:
    """One blob on its way into the store. Not visible until `commit` has verified it.

    Hashing and writing run in the writer's own thread, pipelined behind the caller: `write`
    returns as soon as the block is queued (up to IN_FLIGHT bytes ahead), so receiving the next
    block overlaps hashing the last one. `written` counts bytes hashed and in the file, in order;
    `on_progress` is called on the event loop each time it grows.
    """

    def __init__(
        self,
        store: ContentStore,
        pending: PendingBlob,
        digest: str,
        size: int,
        media_type: str | None,
    ) -> None:
        self._store = store
        self._pending = pending
        self._hash = hashlib.sha256()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blob-writer")
        self._in_flight: deque[tuple[asyncio.Future[None], int]] = deque()
        self._in_flight_bytes = 0
        self._failure: BaseException | None = None
        self._aborted = False
        self.digest = digest
        self.size = size
        self.media_type = media_type
        self.accepted = 0
        self.written = 0
        self.on_progress: Callable[[], None] | None = None

    async def write(self, data: bytes) -> None:
        """Append bytes: hashed and written in the writer's thread."""
        await self._queue(len(data), self._write, data)

    async def adopt(self, length: int) -> None:
        """Append `length` bytes that are already in their chunk files (put there by the swarm
        or a range fetch): read back and hashed in the writer's thread."""
        start = self.accepted
        await self._queue(length, self._hash_range, start, start + length)

    @property
    def directory(self) -> Path | None:
        """Where the chunk files are being written (None when they are not in files)."""
        return self._pending.directory

    async def _queue(self, length: int, work: Callable[..., None], *args: object) -> None:
        self._raise_failure()
        if self.accepted + length > self.size:
            raise ContentInvalid("more bytes than announced", {"digest": self.digest})
        self.accepted += length
        future = asyncio.get_running_loop().run_in_executor(self._thread, work, *args)
        self._in_flight.append((future, length))
        self._in_flight_bytes += length
        future.add_done_callback(self._landed)
        while self._in_flight_bytes > IN_FLIGHT:
            await asyncio.wait([self._in_flight[0][0]])
        self._raise_failure()

    def _write(self, data: bytes) -> None:
        if self._aborted:
            return
        self._hash.update(data)
        self._pending.write(data)

    def _hash_range(self, start: int, end: int) -> None:
        if self._aborted:
            return
        for offset in range(start, end, READ_BLOCK):
            self._hash.update(self._pending.read(offset, min(end, offset + READ_BLOCK)))

    def _landed(self, future: asyncio.Future[None]) -> None:
        # One worker thread: blocks land in the order they were queued.
        _, length = self._in_flight.popleft()
        self._in_flight_bytes -= length
        if future.cancelled():
            self._failure = self._failure or ContentInvalid("write cancelled")
        elif future.exception() is not None:
            self._failure = self._failure or future.exception()
        else:
            self.written += length
            if self.on_progress:
                self.on_progress()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def flush(self) -> None:
        """Wait until every queued block is hashed and written."""
        while self._in_flight:
            await asyncio.wait([self._in_flight[-1][0]])
        self._raise_failure()

    async def read(self, start: int, end: int) -> bytes:
        """Bytes already written, while the blob is still being written."""
        if end > self.written:
            raise ValueError("read beyond what is written")
        return await asyncio.to_thread(self._pending.read, start, end)

    def segments(self, start: int, end: int) -> list[Segment] | None:
        """File ranges of bytes already written (open them before the next await)."""
        if end > self.written:
            raise ValueError("read beyond what is written")
        return self._pending.segments(start, end)

    async def commit(self) -> BlobInfo:
        try:
            await self.flush()
        except BaseException:
            self.abort()
            raise
        if self.written != self.size:
            self.abort()
            raise ContentInvalid(
                f"size mismatch: got {self.written} bytes, expected {self.size}",
                {"digest": self.digest},
            )
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self.digest:
            self.abort()
            raise ContentInvalid("digest mismatch", {"digest": self.digest, "actual": actual})
        self._thread.shutdown(wait=False)
        self._pending.publish()
        return self._store._committed(self.digest, self.size, self.media_type)

    def abort(self) -> None:
        """Drop the blob. The discard runs on the writer's thread after the block it may be
        writing, so no file can be created behind it."""
        if self._aborted:
            return
        self._aborted = True
        self._thread.submit(self._pending.discard)
        self._thread.shutdown(wait=False)


class ContentStore:
    def __init__(
        self,
        backend: BlobBackend,
        metadata: Metadata,
        max_bytes: int = 0,
        low_watermark: float = 0.9,
        on_evict: Callable[[BlobInfo], None] | None = None,
    ) -> None:
        self._backend = backend
        self._meta = metadata
        self._max_bytes = max_bytes
        self._low_watermark = low_watermark
        self._on_evict = on_evict
        self._busy: Counter[str] = Counter()
        self._recover()

    @classmethod
    def open(cls, data_dir: Path, **options: object) -> ContentStore:
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(DiskBlobs(data_dir), Metadata(data_dir / "metadata.sqlite"), **options)  # type: ignore[arg-type]

    @classmethod
    def memory(cls, **options: object) -> ContentStore:
        return cls(MemoryBlobs(), Metadata(None), **options)  # type: ignore[arg-type]

    def close(self) -> None:
        self._meta.close()

    def _recover(self) -> None:
        """Make metadata and bytes agree after a crash: drop temporary files and records of
        blobs whose bytes are gone; blobs published but not yet recorded were verified before
        their rename, so they are recorded again."""
        self._backend.clear_temporary()
        on_disk = self._backend.digests()
        for record in self._meta.blobs():
            if record.digest not in on_disk or not self._backend.complete(
                record.digest, record.size
            ):
                log.warning("dropping incomplete blob", extra={"digest": record.digest})
                self._meta.remove_blob(record.digest)
                self._backend.delete(record.digest)
            on_disk.discard(record.digest)
        for digest in on_disk:
            self._meta.add_blob(digest, self._backend.stored_size(digest), None)

    # -- reading

    def stat(self, digest: str) -> BlobInfo | None:
        record = self._meta.blob(digest)
        if record is None:
            return None
        return BlobInfo(record.digest, record.size, record.media_type)

    def require(self, digest: str) -> BlobInfo:
        info = self.stat(digest)
        if info is None:
            raise BlobUnknown("blob unknown to this node", {"digest": digest})
        return info

    @contextmanager
    def using(self, digest: str) -> Iterator[None]:
        """Keep a blob from eviction while it is served or copied."""
        self._busy[digest] += 1
        try:
            yield
        finally:
            self._busy[digest] -= 1
            if not self._busy[digest]:
                del self._busy[digest]

    async def read(
        self, info: BlobInfo, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        end = info.size if end is None else end
        self._meta.touch(info.digest)
        with self.using(info.digest):
            position = start
            while position < end:
                stop = min(end, position + READ_BLOCK)
                yield await asyncio.to_thread(
                    self._backend.read, info.digest, info.size, position, stop
                )
                position = stop

    async def read_all(self, digest: str) -> bytes:
        info = self.require(digest)
        return b"".join([part async for part in self.read(info)])

    async def pieces(
        self, info: BlobInfo, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes | Segment]:
        """The blob as file segments for sendfile where the backend has files, else as bytes.
        A segment's file must be opened before the next await (eviction may follow)."""
        end = info.size if end is None else end
        segments = self._backend.segments(info.digest, info.size, start, end)
        if segments is None:
            async for block in self.read(info, start, end):
                yield block
            return
        self._meta.touch(info.digest)
        with self.using(info.digest):
            for segment in segments:
                yield segment

    # -- writing

    def begin(self, digest: str, size: int, media_type: str | None = None) -> BlobWriter:
        return BlobWriter(self, self._backend.begin(digest, size), digest, size, media_type)

    async def put(self, digest: str, data: bytes, media_type: str | None = None) -> BlobInfo:
        writer = self.begin(digest, len(data), media_type)
        try:
            await writer.write(data)
        except BaseException:
            writer.abort()
            raise
        return await writer.commit()

    def _committed(self, digest: str, size: int, media_type: str | None) -> BlobInfo:
        self._meta.add_blob(digest, size, media_type)
        with self.using(digest):  # the blob just written is about to be served
            self.evict()
        return BlobInfo(digest, size, media_type)

    def delete(self, digest: str) -> None:
        self._meta.remove_blob(digest)
        self._backend.delete(digest)

    # -- quota

    def usage(self) -> int:
        return self._meta.total_bytes()

    def evict(self) -> int:
        """Evict least recently used content above the quota down to the low watermark, never
        content in use or pinned. Returns the bytes freed."""
        if not self._max_bytes:
            return 0
        total = self._meta.total_bytes()
        if total <= self._max_bytes:
            return 0
        target = int(self._max_bytes * self._low_watermark)
        freed = 0
        for record in self._meta.least_recently_used():
            if total - freed <= target:
                break
            if record.digest in self._busy:
                continue
            self.delete(record.digest)
            freed += record.size
            log.info("evicted", extra={"digest": record.digest, "bytes": record.size})
            if self._on_evict:
                self._on_evict(BlobInfo(record.digest, record.size, record.media_type))
        return freed

    # -- tags and pins

    def set_tag(self, ns: str, repo: str, tag: str, digest: str, media_type: str) -> None:
        self._meta.set_tag(ns, repo, tag, digest, media_type)

    def tag(self, ns: str, repo: str, tag: str) -> TagRecord | None:
        return self._meta.tag(ns, repo, tag)

    def pin(self, digest: str, owner: str) -> None:
        self._meta.pin(digest, owner)

    def unpin(self, owner: str) -> None:
        self._meta.unpin(owner)

    def pin_owners(self) -> set[str]:
        """Every owner holding pins (the seeder releases those of archives that are gone)."""
        return self._meta.pin_owners()

    def pinned(self, digest: str) -> bool:
        return self._meta.pinned(digest)

    def directory(self, digest: str) -> Path | None:
        """The directory of a complete blob's chunk files (what the swarm seeds from)."""
        return self._backend.directory(digest)

    def set_torrents(self, digest: str, metainfos: list[bytes]) -> None:
        """The chunk torrents of a complete blob, kept so a restart seeds without rehashing."""
        self._meta.set_torrents(digest, metainfos)

    def torrents(self, digest: str) -> list[bytes]:
        return self._meta.torrents(digest)

    def blobs(self) -> list[BlobInfo]:
        return [BlobInfo(r.digest, r.size, r.media_type) for r in self._meta.blobs()]
