"""Blobs as chunk files on local disk.

Layout under the data directory:
    blobs/sha256/<2 hex>/<hex>/<hex>.<chunk index>    a complete, verified blob
    tmp/<random>/<hex>.<chunk index>                   a blob being written
A blob becomes visible by one atomic rename of its temporary directory, so a blob directory is
always whole; `tmp/` is wiped at start, so a crash leaves nothing half-written behind. The chunk
file names are the chunk torrents' names, so the swarm seeds straight from these files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
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


def _pread_chunks(directory: Path, digest: str, size: int, start: int, end: int) -> bytes:
    parts = []
    for segment in _segments(directory, digest, size, start, end):
        fd = os.open(segment.path, os.O_RDONLY)
        try:
            data = os.pread(fd, segment.length, segment.offset)
        finally:
            os.close(fd)
        if len(data) != segment.length:
            raise OSError(f"short read of {segment.path} at {segment.offset}")
        parts.append(data)
    return b"".join(parts)


class DiskPending:
    def __init__(self, final_dir: Path, temp_dir: Path, digest: str, size: int) -> None:
        self._final_dir = final_dir
        self._dir = temp_dir
        self._digest = digest
        self._size = size
        self._step = chunk_size(size)
        self._written = 0
        self._file: int | None = None
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
            taken = view[: self._step - offset]
            os.write(self._file, taken)  # regular files take whole writes
            self._written += len(taken)
            view = view[len(taken) :]
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

    def publish(self) -> None:
        self._close_file()
        if self._size == 0:
            self._dir.mkdir(exist_ok=True)
        self._final_dir.parent.mkdir(parents=True, exist_ok=True)
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

    def discard(self) -> None:
        self._close_file()
        if self._dir != self._final_dir:
            shutil.rmtree(self._dir, ignore_errors=True)


class DiskBlobs:
    def __init__(self, root: Path) -> None:
        self._blobs = root / "blobs" / "sha256"
        self._tmp = root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def directory(self, digest: str) -> Path:
        """The directory of a complete blob's chunk files (what the swarm seeds from)."""
        hex_digest = _hex(digest)
        return self._blobs / hex_digest[:2] / hex_digest

    def begin(self, digest: str, size: int) -> DiskPending:
        return DiskPending(self.directory(digest), self._tmp / uuid.uuid4().hex, digest, size)

    def has(self, digest: str) -> bool:
        return self.directory(digest).is_dir()

    def read(self, digest: str, size: int, start: int, end: int) -> bytes:
        return _pread_chunks(self.directory(digest), digest, size, start, end)

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
