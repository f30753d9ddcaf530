"""Blobs as chunk files on local disk.

Layout under the data directory:
    blobs/sha256/<2 hex>/<hex>/<hex>.<chunk index>    a complete, verified blob
    tmp/<random>/<hex>.<chunk index>                   a blob being written
A blob becomes visible by one atomic rename of its temporary directory, so a blob directory is
always whole; `tmp/` is wiped at start, so a crash leaves nothing half-written behind. The chunk
file names are the chunk torrents' names, so the swarm seeds straight from these files.

Durability (with `fsync`): each chunk file is fsynced on a sync thread as soon as its bytes are
final, while the next chunk is written; the temporary directory is fsynced before the rename and
the parent directories after it. Only then does the store record the blob as complete, so a
power loss can take a blob's record but never leave a recorded blob with bytes not on disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from node.store.backend import Segment
from node.store.chunking import chunk_count, chunk_name, chunk_size


def _hex(digest: str) -> str:
    return digest.partition(":")[2]


def _segments(directory: Path, digest: str, size: int, start: int, end: int) -> list[Segment]:
    step = chunk_size(size)
    result = []
    position = start
    while position < end:
        index, offset = divmod(position, step)
        length = min(end - position, step - offset)
        result.append(Segment(directory / chunk_name(digest, index), offset, length))
        position += length
    return result


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of `data` at `offset` of the file. A disk that fills up takes what fits (a
    short write, no error); writing the rest then says why it cannot take more."""
    view = memoryview(data)
    while view:
        taken = os.pwrite(fd, view, offset)
        if not taken:
            raise OSError(errno.EIO, "the disk took no byte of a write")
        view, offset = view[taken:], offset + taken


def fsync_path(path: Path) -> None:
    """fsync a file or directory by its path (Linux flushes the inode's pages, whatever the
    descriptor's mode)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pread_chunks(
    directory: Path, digest: str, size: int, start: int, end: int, from_disk: bool = False
) -> bytes:
    parts = []
    for segment in _segments(directory, digest, size, start, end):
        fd = os.open(segment.path, os.O_RDONLY)
        try:
            if from_disk:  # what the page cache holds may differ from what the disk does
                os.posix_fadvise(fd, segment.offset, segment.length, os.POSIX_FADV_DONTNEED)
            data = os.pread(fd, segment.length, segment.offset)
        finally:
            os.close(fd)
        if len(data) != segment.length:
            raise OSError(f"short read of {segment.path} at {segment.offset}")
        parts.append(data)
    return b"".join(parts)


class DiskPending:
    def __init__(
        self,
        final_dir: Path,
        temp_dir: Path,
        digest: str,
        size: int,
        syncer: ThreadPoolExecutor | None,
    ) -> None:
        self._final_dir = final_dir
        self._dir = temp_dir
        self._digest = digest
        self._size = size
        self._step = chunk_size(size)
        self._written = 0
        self._file: int | None = None
        self._syncer = syncer  # None: nothing is fsynced
        self._synced = 0  # chunks handed to the syncer
        self._syncs: list[Future[None]] = []
        self._new_parent = False  # the final place's parent directory was made for it
        self._dir.mkdir(parents=True)

    @property
    def directory(self) -> Path:
        return self._dir

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            index, offset = divmod(self._written, self._step)
            if offset == 0 or self._file is None:
                self._close_file()
                path = self._dir / chunk_name(self._digest, index)
                self._file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                length = min(self._step, self._size - index * self._step)
                with contextlib.suppress(OSError):  # a hint: one extent, fewer allocations
                    os.posix_fallocate(self._file, 0, length)
            part = view[: self._step - offset]
            pwrite_all(self._file, part, offset)
            self._written += len(part)
            view = view[len(part) :]
        if self._written >= self._size:
            self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None

    def read(self, start: int, end: int) -> bytes:
        directory = self._dir
        try:
            return _pread_chunks(directory, self._digest, self._size, start, end)
        except FileNotFoundError:
            if directory == self._dir:
                raise
            # Published (renamed) while this read ran: read from the final place.
            return _pread_chunks(self._dir, self._digest, self._size, start, end)

    def segments(self, start: int, end: int) -> list[Segment]:
        return _segments(self._dir, self._digest, self._size, start, end)

    def settle(self, end: int) -> None:
        """Bytes before `end` are final: fsync each chunk file they complete, on the sync
        thread, while the next chunks are written."""
        if self._syncer is None:
            return
        complete = chunk_count(self._size) if end >= self._size else end // self._step
        for index in range(self._synced, complete):
            path = self._dir / chunk_name(self._digest, index)
            self._syncs.append(self._syncer.submit(fsync_path, path))
        self._synced = max(self._synced, complete)

    def sync(self) -> None:
        """Wait until every chunk file is on disk, then put the directory's entries there."""
        self._close_file()
        if self._size == 0:
            self._dir.mkdir(exist_ok=True)
        if self._syncer is None:
            return
        self.settle(self._size)
        for future in self._syncs:
            future.result()  # raises the fsync's error: such a blob is not stored
        fsync_path(self._dir)

    def publish(self) -> None:
        self._close_file()
        if self._size == 0:
            self._dir.mkdir(exist_ok=True)
        parent = self._final_dir.parent
        self._new_parent = not parent.is_dir()
        parent.mkdir(parents=True, exist_ok=True)
        try:
            self._dir.rename(self._final_dir)
        except OSError:
            if not self._final_dir.is_dir():
                raise
            # Someone stored the same bytes first: an existing blob counts as written.
            shutil.rmtree(self._dir, ignore_errors=True)
            return
        # Whoever still opens files by the old path (the swarm: libtorrent moves a torrent's
        # save path in its own time) finds them through a link; `tmp/` is wiped at each start.
        with contextlib.suppress(OSError):
            self._dir.symlink_to(self._final_dir, target_is_directory=True)
        self._dir = self._final_dir

    def sync_published(self) -> None:
        """Put the rename on disk: the blob's parent directory, and its own parent's entry
        for it when it was made for this blob."""
        if self._syncer is None:
            return
        fsync_path(self._final_dir.parent)
        if self._new_parent:
            fsync_path(self._final_dir.parent.parent)

    def discard(self) -> None:
        self._close_file()
        if self._dir != self._final_dir:
            shutil.rmtree(self._dir, ignore_errors=True)


class DiskBlobs:
    def __init__(self, root: Path, fsync: bool = True) -> None:
        self._blobs = root / "blobs" / "sha256"
        self._tmp = root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        # Two threads: a chunk file is fsynced while the next is written, by any writer.
        self._syncer = ThreadPoolExecutor(2, thread_name_prefix="fsync") if fsync else None

    @property
    def durable(self) -> bool:
        """Whether a published blob is on disk (fsynced) by the time it is recorded."""
        return self._syncer is not None

    def close(self) -> None:
        if self._syncer is not None:
            self._syncer.shutdown(wait=True)

    def directory(self, digest: str) -> Path:
        """The directory of a complete blob's chunk files (what the swarm seeds from)."""
        hex_digest = _hex(digest)
        return self._blobs / hex_digest[:2] / hex_digest

    def begin(self, digest: str, size: int) -> DiskPending:
        directory, temp = self.directory(digest), self._tmp / uuid.uuid4().hex
        return DiskPending(directory, temp, digest, size, self._syncer)

    def sync(self, digest: str, size: int) -> None:
        """Put a stored blob's chunk files and directory on disk (blocking)."""
        directory = self.directory(digest)
        for index in range(chunk_count(size)):
            fsync_path(directory / chunk_name(digest, index))
        fsync_path(directory)
        fsync_path(directory.parent)

    def has(self, digest: str) -> bool:
        return self.directory(digest).is_dir()

    def read(self, digest: str, size: int, start: int, end: int, from_disk: bool = False) -> bytes:
        return _pread_chunks(self.directory(digest), digest, size, start, end, from_disk)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self._blobs).free

    def stored_size(self, digest: str) -> int:
        return sum(p.stat().st_size for p in self.directory(digest).iterdir())

    def segments(self, digest: str, size: int, start: int, end: int) -> list[Segment]:
        return _segments(self.directory(digest), digest, size, start, end)

    def delete(self, digest: str) -> None:
        shutil.rmtree(self.directory(digest), ignore_errors=True)

    def digests(self) -> set[str]:
        return {"sha256:" + d.name for d in self._blobs.glob("*/*") if d.is_dir()}

    def clear_temporary(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def complete(self, digest: str, size: int) -> bool:
        """Whether every chunk file is present with its full length (a cheap check at start)."""
        directory = self.directory(digest)
        step = chunk_size(size)
        for index in range(chunk_count(size)):
            expected = min(step, size - index * step)
            try:
                if (directory / chunk_name(digest, index)).stat().st_size != expected:
                    return False
            except FileNotFoundError:
                return False
        return True
