"""Blobs in memory: the disk backend's twin for unit tests, held to the same conformance suite.
A capacity, when given, is the twin of a disk's size: a write beyond it fails as a full disk
does."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from node.store.backend import Segment

UNLIMITED = 1 << 62


class MemoryPending:
    def __init__(self, blobs: MemoryBlobs, digest: str) -> None:
        self._blobs = blobs
        self._digest = digest
        self._data = bytearray()

    @property
    def directory(self) -> Path | None:
        return None

    def write(self, data: bytes) -> None:
        self._blobs.allocate(len(data))
        self._data += data

    def read(self, start: int, end: int) -> bytes:
        return bytes(self._data[start:end])

    def segments(self, start: int, end: int) -> list[Segment] | None:
        return None

    def settle(self, end: int) -> None:
        pass

    def sync(self) -> None:
        pass

    def publish(self) -> None:
        if not self._blobs.has(self._digest):
            self._blobs.blobs[self._digest] = bytes(self._data)
        else:
            self._blobs.allocate(-len(self._data))

    def sync_published(self) -> None:
        pass

    def discard(self) -> None:
        self._blobs.allocate(-len(self._data))
        self._data = bytearray()


class MemoryBlobs:
    durable = True  # as durable as memory gets: whatever is stored stays until deleted

    def __init__(self, capacity: int = UNLIMITED) -> None:
        self.blobs: dict[str, bytes] = {}
        self._capacity = capacity
        self._used = 0

    def allocate(self, length: int) -> None:
        if self._used + length > self._capacity:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._used += length

    def close(self) -> None:
        pass

    def begin(self, digest: str, size: int) -> MemoryPending:
        return MemoryPending(self, digest)

    def sync(self, digest: str, size: int) -> None:
        pass

    def has(self, digest: str) -> bool:
        return digest in self.blobs

    def directory(self, digest: str) -> Path | None:
        return None

    def read(self, digest: str, size: int, start: int, end: int, from_disk: bool = False) -> bytes:
        return self.blobs[digest][start:end]

    def free_bytes(self) -> int:
        return self._capacity - self._used

    def stored_size(self, digest: str) -> int:
        return len(self.blobs[digest])

    def segments(self, digest: str, size: int, start: int, end: int) -> list[Segment] | None:
        return None

    def delete(self, digest: str) -> None:
        self.allocate(-len(self.blobs.pop(digest, b"")))

    def digests(self) -> set[str]:
        return set(self.blobs)

    def clear_temporary(self) -> None:
        pass

    def complete(self, digest: str, size: int) -> bool:
        return len(self.blobs.get(digest, b"")) == size
