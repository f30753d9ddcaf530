"""Blobs in memory: the disk backend's twin for unit tests, held to the same conformance suite."""

from __future__ import annotations

from pathlib import Path

from node.store.backend import Segment


class MemoryPending:
    def __init__(self, blobs: dict[str, bytes], digest: str) -> None:
        self._blobs = blobs
        self._digest = digest
        self._data = bytearray()

    @property
    def directory(self) -> Path | None:
        return None

    def write(self, data: bytes) -> None:
        self._data += data

    def read(self, start: int, end: int) -> bytes:
        return bytes(self._data[start:end])

    def segments(self, start: int, end: int) -> list[Segment] | None:
        return None

    def publish(self) -> None:
        self._blobs.setdefault(self._digest, bytes(self._data))

    def discard(self) -> None:
        self._data = bytearray()


class MemoryBlobs:
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    def begin(self, digest: str, size: int) -> MemoryPending:
        return MemoryPending(self._blobs, digest)

    def has(self, digest: str) -> bool:
        return digest in self._blobs

    def directory(self, digest: str) -> Path | None:
        return None

    def read(self, digest: str, size: int, start: int, end: int) -> bytes:
        return self._blobs[digest][start:end]

    def stored_size(self, digest: str) -> int:
        return len(self._blobs[digest])

    def segments(self, digest: str, size: int, start: int, end: int) -> list[Segment] | None:
        return None

    def delete(self, digest: str) -> None:
        self._blobs.pop(digest, None)

    def digests(self) -> set[str]:
        return set(self._blobs)

    def clear_temporary(self) -> None:
        pass

    def complete(self, digest: str, size: int) -> bool:
        return len(self._blobs.get(digest, b"")) == size
