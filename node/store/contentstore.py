"""The content store: every blob verified before it is visible, LRU eviction under a quota.

Writes follow one order: temporary area, hash while writing, check size then digest, on disk
(fsync), atomic publish, then metadata. A blob that already exists counts as written. Nothing is
served that skipped this path. The bytes live in a backend (chunk files on disk, or memory for
tests); the logic here is shared by both.

A full disk is no error for a client: a write that runs out of space (or that a read-only or
failing disk refuses) fails with `StoreFull`
(the caller streams the blob through without storing it), `room_for` tells beforehand whether a
blob fits, and a failed metadata statement degrades to a cache miss. Each kind of trouble is
logged once a minute at most, and reported to `on_trouble` each time.

Blobs not known to be on disk when the store opens (the node stopped before they were synced,
or a store of a version that never synced) are suspects: not served, listed, seeded nor counted
as present until verified, in the background or when a client asks for one first (`check`).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import sqlite3
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from distributed_images.logs import Throttle
from node.errors import BlobUnknown, ContentInvalid, StoreFull
from node.store import integrity
from node.store.backend import BlobBackend, PendingBlob, Segment
from node.store.disk import DiskBlobs
from node.store.integrity import (
    CanonicalTorrent,
    Damaged,
    IntegrityEvents,
    NoEvents,
    Pace,
    Verdict,
)
from node.store.memory import UNLIMITED, MemoryBlobs
from node.store.metadata import Metadata, TagRecord, open_metadata

log = logging.getLogger(__name__)

READ_BLOCK = 1 << 20
IN_FLIGHT = 16 << 20  # bytes a writer may queue ahead of its thread
DISK_RESERVE = 8 << 20  # left free by `room_for`: metadata and logs need a little room too
TROUBLE_LOG_INTERVAL = 60.0  # seconds between two log lines of the same trouble
DISK_FULL = "disk_full"  # trouble: a write found no space
READ_ONLY = "read_only"  # trouble: a write found the disk read-only
IO_ERROR = "io_error"  # trouble: the disk failed a write (EIO: a failing disk or its driver)
METADATA = "metadata"  # trouble: an SQLite statement failed
# The trouble a write's error says the store's disk is in: it takes no writes for now.
UNWRITABLE = {
    errno.ENOSPC: DISK_FULL,
    errno.EDQUOT: DISK_FULL,
    errno.EROFS: READ_ONLY,
    errno.EIO: IO_ERROR,
}
TROUBLE_LINES = {
    DISK_FULL: "the store's disk is full: blobs are streamed to clients without being stored",
    READ_ONLY: "the store's disk is read-only: blobs are streamed to clients without being stored",
    IO_ERROR: "the store's disk failed a write (I/O error): blobs are streamed to clients"
    " without being stored",
    METADATA: "the store's metadata failed: answering without it",
}


def unwritable(error: BaseException) -> bool:
    """Whether an error means the store's disk takes no writes for now: it is full, the user's
    quota on it is, it is read-only (a file system remounted so after errors), or it failed the
    write (EIO)."""
    if isinstance(error, StoreFull):
        return True
    return isinstance(error, OSError) and error.errno in UNWRITABLE


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
        self._settled = 0  # bytes hashed and final, in the writer's thread
        self.digest = digest
        self.size = size
        self.media_type = media_type
        self.accepted = 0
        self.written = 0
        self.verified = False  # every byte written and the digest checked: readers may end
        self.on_progress: Callable[[], None] | None = None

    async def write(self, *parts: bytes) -> None:
        """Append bytes, in one or more parts: hashed and written in the writer's thread."""
        await self._queue(sum(len(part) for part in parts), self._write, parts)

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

    def _write(self, parts: tuple[bytes, ...]) -> None:
        if self._aborted:
            return
        for part in parts:
            self._hash.update(part)
            self._pending.write(part)
        self._settle(sum(len(part) for part in parts))

    def _hash_range(self, start: int, end: int) -> None:
        if self._aborted:
            return
        for offset in range(start, end, READ_BLOCK):
            self._hash.update(self._pending.read(offset, min(end, offset + READ_BLOCK)))
        self._settle(end - start)

    def _settle(self, length: int) -> None:
        self._settled += length
        self._pending.settle(self._settled)

    def _landed(self, future: asyncio.Future[None]) -> None:
        # One worker thread: blocks land in the order they were queued.
        _, length = self._in_flight.popleft()
        self._in_flight_bytes -= length
        if future.cancelled():
            self._failure = self._failure or ContentInvalid("write cancelled")
        elif (error := future.exception()) is not None:
            self._failure = self._failure or self._store._failed_write(error)
        elif self._failure is None:  # bytes behind a failed block are not where they belong
            self.written += length
            if self.on_progress:
                self.on_progress()

    def refused(self, error: OSError) -> StoreFull:
        """A write into this blob's files by someone else (the swarm) that the disk refused
        (full, or read-only), counted and logged as the store's own: the StoreFull it makes."""
        failure = self._store._failed_write(error)
        return failure if isinstance(failure, StoreFull) else StoreFull(str(error))

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
        """Verify, put on disk, publish, record: the blob is stored once this returns."""
        try:
            try:
                await self.flush()
                self._check()
                # The bytes are the blob's: readers get its last bytes while it is put on disk.
                self.verified = True
                if self.on_progress:
                    self.on_progress()
                await asyncio.get_running_loop().run_in_executor(self._thread, self._pending.sync)
            except BaseException:
                self.abort()
                raise
            self._thread.shutdown(wait=False)
            self._store._replacing(self.digest)
            try:
                self._pending.publish()
                await asyncio.to_thread(self._pending.sync_published)
            except BaseException:
                self._store.delete(self.digest)
                raise
        except OSError as e:
            error = self._store._failed_write(e)
            if error is e:
                raise
            raise error from e
        finally:
            self._store._writers.discard(self)
        return self._store._committed(self.digest, self.size, self.media_type)

    def _check(self) -> None:
        if self.written != self.size:
            raise ContentInvalid(
                f"size mismatch: got {self.written} bytes, expected {self.size}",
                {"digest": self.digest},
            )
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self.digest:
            raise ContentInvalid("digest mismatch", {"digest": self.digest, "actual": actual})

    def abort(self) -> None:
        """Drop the blob, once nobody reads it any more (readers following the write may still
        be sending what was written; they go on from the upstream). The discard runs on the
        writer's thread after the block it may be writing, so no file can be created behind it."""
        if self._aborted:
            return
        self._aborted = True
        self._store._writers.discard(self)
        self._store._when_unused(self.digest, self._discard)

    def _discard(self) -> None:
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
        canonical_torrent: CanonicalTorrent | None = None,
    ) -> None:
        """`canonical_torrent`: how chunk torrents are made, so verifying a blob also checks
        the torrents kept for it."""
        self._backend = backend
        self._meta = metadata
        self._max_bytes = max_bytes
        self._low_watermark = low_watermark
        self._on_evict = on_evict
        self._canonical_torrent = canonical_torrent
        self.events: IntegrityEvents = NoEvents()
        self.on_trouble: Callable[[str], None] | None = None
        self._troubles = {kind: Throttle(TROUBLE_LOG_INTERVAL) for kind in TROUBLE_LINES}
        self._meta.on_error = self._metadata_failed
        self._writers: set[BlobWriter] = set()
        self._gone: set[str] = set()  # deleted, but their records could not be removed
        self._busy: Counter[str] = Counter()
        self._after_use: dict[str, list[Callable[[], None]]] = {}  # run once a blob is not busy
        self._suspects: set[str] = set()
        self._found_by: dict[str, str] = {}  # suspects found damaged in part, by what
        self._checks: dict[str, asyncio.Future[Verdict]] = {}
        self._recover()

    @classmethod
    def open(cls, data_dir: Path, fsync: bool = True, **options: object) -> ContentStore:
        data_dir.mkdir(parents=True, exist_ok=True)
        backend = DiskBlobs(data_dir, fsync)
        return cls(backend, open_metadata(data_dir / "metadata.sqlite"), **options)  # type: ignore[arg-type]

    @classmethod
    def memory(cls, capacity: int = UNLIMITED, **options: object) -> ContentStore:
        return cls(MemoryBlobs(capacity), Metadata(None), **options)  # type: ignore[arg-type]

    def close(self) -> None:
        """Stop cleanly. Blobs stored without fsync are put on disk now, so the next start
        knows them durable; suspects stay suspects (they were never verified)."""
        if not self._backend.durable:
            synced = []
            for digest in self._meta.not_durable():
                record = self._meta.blob(digest)
                if record is not None and digest not in self._suspects:
                    self._backend.sync(digest, record.size)
                    synced.append(digest)
            self._meta.set_durable(synced)
        self._backend.close()
        self._meta.close()

    def _recover(self) -> None:
        """Make metadata and bytes agree after a crash: drop temporary files and records of
        blobs whose bytes are gone; record blobs found without a record. Whatever is not known
        to be on disk, or has chunk files of the wrong length, becomes a suspect."""
        self._backend.clear_temporary()
        on_disk = self._backend.digests()
        short = set()
        for record in self._meta.blobs():
            if record.digest not in on_disk:
                log.warning("dropping a blob whose files are gone", extra={"digest": record.digest})
                self.delete(record.digest)
            elif not self._backend.complete(record.digest, record.size):
                short.add(record.digest)
            on_disk.discard(record.digest)
        for digest in on_disk:
            self._meta.add_found_blob(digest, self._backend.stored_size(digest))
        self._suspects = set(self._meta.not_durable()) | short
        if self._suspects:
            log.warning(
                "blobs not known to be whole on disk (the node stopped before they were"
                " synced, or their files changed): verifying them before they are served",
                extra={"blobs": len(self._suspects)},
            )

    # -- reading

    def stat(self, digest: str) -> BlobInfo | None:
        """The blob, if it is stored and may be served (suspects may not, until verified)."""
        if digest in self._suspects or digest in self._gone:
            return None
        record = self._meta.blob(digest)
        if record is None:
            return None
        return BlobInfo(record.digest, record.size, record.media_type)

    def size(self, digest: str) -> int | None:
        """The size of a stored blob, whether it may be served or not."""
        record = self._meta.blob(digest)
        return None if record is None else record.size

    async def check(self, digest: str) -> BlobInfo | None:
        """`stat`, after verifying the blob first if it is a suspect."""
        if digest in self._suspects:
            await self.verify(digest, integrity.RECOVERY)
        return self.stat(digest)

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
                for job in self._after_use.pop(digest, []):
                    job()

    def _when_unused(self, digest: str, job: Callable[[], None]) -> None:
        if digest in self._busy:
            self._after_use.setdefault(digest, []).append(job)
        else:
            job()

    async def read(
        self, info: BlobInfo, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        end = info.size if end is None else end
        self._meta.touch(info.digest)
        with self.using(info.digest):
            position = start
            while position < end:
                stop = min(end, position + READ_BLOCK)
                try:
                    block = await asyncio.to_thread(
                        self._backend.read, info.digest, info.size, position, stop
                    )
                except OSError as e:
                    if e.errno == errno.EIO:
                        self.doubt(info.digest)
                    raise
                yield block
                position = stop

    async def read_all(self, digest: str) -> bytes:
        info = self.require(digest)
        return b"".join([part async for part in self.read(info)])

    async def content(self, digest: str) -> bytes | None:
        """The whole of a stored blob (a manifest, a config), or None when it is not stored or
        the disk cannot read it: then it is checked before this returns, and purged if unreadable,
        so the caller fetches it again rather than failing on it at every request."""
        try:
            return await self.read_all(digest)
        except BlobUnknown:
            return None
        except OSError as e:
            if e.errno != errno.EIO:
                raise
        await self.verify(digest, integrity.SCRUB)
        return None

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
        """A writer for the blob; StoreFull when even its temporary place cannot be made."""
        try:
            pending = self._backend.begin(digest, size)
        except OSError as e:
            error = self._failed_write(e)
            if error is e:
                raise
            raise error from e
        writer = BlobWriter(self, pending, digest, size, media_type)
        self._writers.add(writer)
        return writer

    def room_for(self, size: int) -> bool:
        """Whether a blob of `size` bytes fits on the disk now, besides what the writers under
        way still have to write, evicting unused content to make room if need be."""
        if self._disk_lacks(size):
            self._trouble(DISK_FULL, f"{size} more bytes do not fit")
            return False
        return True

    def no_room_to_pin(self, size: int) -> str | None:
        """Why `size` more bytes of pinned content (never evicted) cannot be stored, if they
        cannot: over the quota with what is pinned already, or more than the disk can take."""
        if size <= 0:
            return None
        pinned = self._meta.pinned_bytes() if self._max_bytes else 0
        if self._max_bytes and pinned + size > self._max_bytes:
            quota = self._max_bytes
            return f"{size} bytes do not fit in the store's quota ({quota} bytes, {pinned} pinned)"
        lacking = self._disk_lacks(size)
        if lacking:
            return f"{size} bytes do not fit on the store's disk ({lacking} bytes short)"
        return None

    def _disk_lacks(self, size: int) -> int:
        """How many bytes short the disk is for `size` more (0: none), after evicting unused
        content if that makes enough room."""
        pending = sum(w.size - w.written for w in self._writers)
        lacking = size + pending + DISK_RESERVE - self._backend.free_bytes()
        if lacking <= 0:
            return 0
        evictable = sum(
            r.size for r in self._meta.least_recently_used() if r.digest not in self._busy
        )
        if evictable < lacking:
            return lacking
        return max(0, lacking - self._evict(lacking))

    async def keep(self, digest: str, data: bytes, media_type: str | None = None) -> bool:
        """`put` small content that serves as well from memory: whether it was stored (a full
        store is not an error here)."""
        try:
            await self.put(digest, data, media_type)
        except StoreFull:
            return False
        return True

    async def put(self, digest: str, data: bytes, media_type: str | None = None) -> BlobInfo:
        writer = self.begin(digest, len(data), media_type)
        try:
            await writer.write(data)
        except BaseException:
            writer.abort()
            raise
        return await writer.commit()

    def _replacing(self, digest: str) -> None:
        """Verified bytes are about to be published: a suspect of the same digest makes way."""
        if digest in self._suspects:
            self._suspects.discard(digest)
            self.delete(digest)

    def _committed(self, digest: str, size: int, media_type: str | None) -> BlobInfo:
        try:
            self._meta.add_blob(digest, size, media_type, durable=self._backend.durable)
        except sqlite3.Error as e:
            # Bytes nobody can find are of no use: they go, and the blob is streamed through.
            self._backend.delete(digest)
            self._metadata_failed(e)
            raise StoreFull("the store's metadata cannot record the blob") from e
        self._gone.discard(digest)
        with self.using(digest):  # the blob just written is about to be served
            self.evict()
        return BlobInfo(digest, size, media_type)

    def delete(self, digest: str) -> None:
        self._found_by.pop(digest, None)
        try:
            self._meta.remove_blob(digest)
        except sqlite3.Error as e:
            self._metadata_failed(e)
            self._gone.add(digest)  # never served again; the record goes at the next start
        self._backend.delete(digest)

    # -- trouble

    def _failed_write(self, error: BaseException) -> BaseException:
        """What a failed write raises: StoreFull when the disk takes no writes, else the error."""
        if not isinstance(error, OSError) or error.errno not in UNWRITABLE:
            return error
        kind = UNWRITABLE[error.errno]
        self._trouble(kind, str(error))
        return StoreFull(TROUBLE_LINES[kind].partition(":")[0])

    def _metadata_failed(self, error: sqlite3.Error) -> None:
        self._trouble(METADATA, str(error))

    def _trouble(self, kind: str, detail: str) -> None:
        """Report each time; log once a minute at most, with how often it happened since."""
        if times := self._troubles[kind].due():
            log.warning(TROUBLE_LINES[kind], extra={"error": detail, "times": times})
        if self.on_trouble is not None:
            self.on_trouble(kind)

    def set_origin(self, digest: str, ns: str, repo: str) -> None:
        """Where a stored blob came from: where to fetch it again if it is found damaged."""
        if self._meta.blob(digest) is not None:
            self._meta.set_origin(digest, ns, repo)

    def origin(self, digest: str) -> tuple[str, str] | None:
        """(registry, repository as the client named it) a stored blob was fetched from."""
        return self._meta.origin(digest)

    # -- integrity

    def suspects(self) -> list[str]:
        """Blobs not known to be on disk, waiting to be verified."""
        return sorted(self._suspects)

    def due_for_scrub(self, interval: float) -> BlobInfo | None:
        """The blob verified longest ago, if that was over `interval` seconds ago."""
        before = time.time() - interval
        record = self._meta.least_recently_verified(before, self._suspects)
        return None if record is None else BlobInfo(record.digest, record.size, record.media_type)

    async def verify(self, digest: str, reason: str, pace: Pace | None = None) -> Verdict:
        """Read the blob back and hash it. Good: a suspect is synced and served from now on.
        Bad: the blob is purged and reported (`events.damaged`). One check per blob at once."""
        return await asyncio.shield(self._check(digest, reason, pace))

    def suspect(self, digest: str, found_by: str) -> None:
        """A stored blob found damaged in part (a chunk whose pieces failed their hash): no
        client is served it until it is verified again, which the next request for it does
        (and purges it, counted as `found_by`, so it is fetched again). Unlike `doubt`, nothing
        is purged now: its chunk torrents seed on, so a rollout keeps its source of the intact
        chunks."""
        if self._meta.blob(digest) is not None:
            self._suspects.add(digest)
            self._found_by[digest] = found_by
            self._meta.set_durable([digest], False)  # a restart verifies it before serving it

    def doubt(self, digest: str) -> None:
        """A stored blob that could not be read (EIO), or whose files ended before its size:
        checked now, out of turn, in the background; found damaged, it is purged (and fetched
        again when asked for, `node.repair`)."""
        self._check(digest, integrity.SCRUB, None)

    def _check(self, digest: str, reason: str, pace: Pace | None) -> asyncio.Future[Verdict]:
        running = self._checks.get(digest)
        if running is not None:
            return running
        check = asyncio.ensure_future(self._verify(digest, reason, pace))
        self._checks[digest] = check
        check.add_done_callback(lambda _: self._checks.pop(digest, None))
        return check

    async def _verify(self, digest: str, reason: str, pace: Pace | None) -> Verdict:
        record = self._meta.blob(digest)
        if record is None:
            return Verdict.GONE
        suspect = digest in self._suspects

        async def paced(length: int) -> None:
            if pace is not None:
                await pace(length)
            self.events.verified(reason, length)

        torrents = self._meta.torrents(digest) if self._canonical_torrent else []
        with self.using(digest):
            try:
                reading = await integrity.read_back(
                    self._backend, digest, record.size, paced, pieces=bool(torrents)
                )
                good = reading.matches
                if good and suspect:
                    await asyncio.to_thread(self._backend.sync, digest, record.size)
            except OSError as e:
                log.warning("cannot read stored blob", extra={"digest": digest, "error": str(e)})
                good = False
        if self._meta.blob(digest) is None or suspect != (digest in self._suspects):
            return Verdict.GONE  # deleted, or replaced by fresh bytes, meanwhile
        if not good:
            self.condemn(digest, reason)
            return Verdict.BAD
        if torrents and not self._torrents_match(digest, record.size, torrents, reading.pieces):
            log.warning("stored chunk torrents do not match the blob: made again when seeded")
            self._meta.remove_torrents(digest)
        self._meta.set_verified(digest)
        if suspect:
            self._suspects.discard(digest)
            self._found_by.pop(digest, None)
            self._meta.set_durable([digest])
        info = self.stat(digest)
        if info is not None:
            self.events.restored(info)
        return Verdict.GOOD

    def _torrents_match(
        self, digest: str, size: int, torrents: list[bytes], pieces: list[bytes]
    ) -> bool:
        canonical = self._canonical_torrent
        assert canonical is not None
        if len(torrents) != len(pieces):
            return False
        made = (canonical(digest, size, index, hashes) for index, hashes in enumerate(pieces))
        return all(m == t for m, t in zip(made, torrents, strict=True))

    def condemn(self, digest: str, found_by: str) -> None:
        """Purge a blob whose bytes are damaged, and report it with where it came from and what
        found it (what first found it damaged in part, for a suspect `suspect` was told of)."""
        found_by = self._found_by.pop(digest, found_by)
        record = self._meta.blob(digest)
        if record is None:
            return
        log.error(
            "stored blob is damaged; purging it", extra={"digest": digest, "found_by": found_by}
        )
        damaged = Damaged(
            digest,
            record.size,
            found_by,
            self._meta.origin(digest),
            frozenset(self._meta.owners(digest)),
        )
        self._suspects.discard(digest)
        self.delete(digest)
        self.events.damaged(damaged)

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
        return self._evict(total - int(self._max_bytes * self._low_watermark))

    def _evict(self, wanted: int) -> int:
        """Evict least recently used content, never content in use or pinned, until `wanted`
        bytes are freed or nothing more can be. Returns the bytes freed."""
        freed = 0
        for record in self._meta.least_recently_used():
            if freed >= wanted:
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
        """Every blob that may be served (suspects are not, until verified)."""
        hidden = self._suspects | self._gone
        return [
            BlobInfo(r.digest, r.size, r.media_type)
            for r in self._meta.blobs()
            if r.digest not in hidden
        ]
