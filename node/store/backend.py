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

    `write` is called from a worker thread, one call at a time; `read` may run concurrently with
    it but only for bytes already written. `publish` and `discard` run on the event loop thread
    after the last write.
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

    def publish(self) -> None: ...

    def discard(self) -> None: ...


class BlobBackend(Protocol):
    def begin(self, digest: str, size: int) -> PendingBlob: ...

    def has(self, digest: str) -> bool: ...

    def directory(self, digest: str) -> Path | None: ...

    def read(self, digest: str, size: int, start: int, end: int) -> bytes: ...

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
