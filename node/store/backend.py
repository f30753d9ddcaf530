"""Where blob bytes live: the small interface the content store builds on, in two forms,
chunk files on disk (`disk.DiskBlobs`) and bytes in memory (`memory.MemoryBlobs`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Segment:
    """A byte range of a file, ready for sendfile."""

    path: Path
    offset: int
    length: int


class PendingBlob(Protocol):
    """Bytes of one blob being written into the temporary area, not yet visible.

    `write`, `settle` and `sync` are called from the writer's thread, one call at a time; `read`
    may run concurrently with them but only for bytes already written. `publish` and `discard`
    run on the event loop thread after the last write; `sync_published` in a worker thread after
    `publish`. In order: bytes written (or put in place by others) and verified, `settle`d as
    they are, `sync`, `publish`, `sync_published`; only then is the blob recorded as stored.
    """

    @property
    def directory(self) -> Path | None:
        """Where the chunk files are (None when the bytes are not in files)."""
        ...

    def write(self, data: bytes) -> None: ...

    def read(self, start: int, end: int) -> bytes: ...

    def segments(self, start: int, end: int) -> list[Segment] | None:
        """File ranges of bytes already written, or None when they are not in files."""
        ...

    def settle(self, end: int) -> None:
        """Bytes before `end` are final: they may be put on disk from now on."""
        ...

    def sync(self) -> None:
        """Block until every byte is on disk (for a backend that fsyncs)."""
        ...

    def publish(self) -> None: ...

    def sync_published(self) -> None:
        """Block until the publication itself is on disk."""
        ...

    def discard(self) -> None: ...


class BlobBackend(Protocol):
    @property
    def durable(self) -> bool:
        """Whether a blob is on disk by the time `sync_published` returns."""
        ...

    def begin(self, digest: str, size: int) -> PendingBlob: ...

    def sync(self, digest: str, size: int) -> None:
        """Block until a stored blob's bytes are on disk."""
        ...

    def close(self) -> None: ...

    def has(self, digest: str) -> bool: ...

    def directory(self, digest: str) -> Path | None: ...

    def read(self, digest: str, size: int, start: int, end: int, from_disk: bool = False) -> bytes:
        """Bytes of a stored blob; `from_disk`: read from the disk, past the page cache (for
        verification), as far as the backend can."""
        ...

    def free_bytes(self) -> int:
        """Bytes the disk under the store has free."""
        ...

    def complete(self, digest: str, size: int) -> bool:
        """Whether every byte of the blob is present (checked at start, after a crash)."""
        ...

    def stored_size(self, digest: str) -> int: ...

    def segments(self, digest: str, size: int, start: int, end: int) -> list[Segment] | None:
        """File ranges covering [start, end), or None when the bytes are not in files."""
        ...

    def delete(self, digest: str) -> None: ...

    def digests(self) -> set[str]: ...

    def clear_temporary(self) -> None: ...
