"""Where an archive's bytes come from, by kind of archive:

- a directory (an OCI image layout): its files, read in place;
- a plain tar: its headers read first (seeking over the data), then members read in place;
- a gzip or zstd compressed tar: a stream, read member after member, and read again from the
  start when a member was needed before the metadata saying so had come by.

Readers of formats see `Contents`: members by name and small JSON documents.
"""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
from pathlib import Path
from typing import IO, Protocol, cast

import zstandard

from node.seed.errors import ArchiveInvalid, ArchiveTooLarge
from node.seed.members import CheckedTarInfo, Listing, Member, clean, resolves

BLOCK = 1 << 20
DOCUMENT_LIMIT = 8 << 20  # a manifest or config larger than this is not one
# A compressed archive may expand to this many times its size (plus some slack for the headers
# and padding of small tars): the most deflate can expand, so no gzip archive ever goes past it.
# A zstd archive that does is a decompression bomb, refused at the first header that declares
# more, before that member is read or written.
MAX_EXPANSION = 1032
EXPANSION_SLACK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
TAR_MAGIC = b"ustar"  # POSIX, GNU and PAX tars: what docker, skopeo and tar write


class Contents(Protocol):
    def has(self, name: str) -> bool: ...

    def member(self, name: str) -> Member:
        """The regular file `name` names (links followed); ArchiveInvalid when there is none."""
        ...

    def document(self, name: str) -> bytes: ...


def compression(path: Path) -> str | None:
    """`gzip`, `zstd`, or None for a plain tar; ArchiveInvalid for anything else."""
    with path.open("rb") as f:
        head = f.read(tarfile.BLOCKSIZE)
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head[257:262] == TAR_MAGIC:
        return None
    raise ArchiveInvalid("not an image archive: not a tar, gzip or zstd file")


def _pread(member: Member, limit: int) -> bytes:
    if member.size > limit:
        raise ArchiveInvalid("too large for a manifest or config", {"member": member.name})
    fd = os.open(member.path, os.O_RDONLY)
    try:
        data = os.pread(fd, member.size, member.offset)
    finally:
        os.close(fd)
    if len(data) != member.size:
        raise ArchiveInvalid("truncated member", {"member": member.name})
    return data


class DirectoryContents:
    """An image layout directory. A link may point anywhere inside it, never outside."""

    def __init__(self, root: Path) -> None:
        self._root = Path(os.path.realpath(root))

    def has(self, name: str) -> bool:
        return resolves(self.member, name)

    def member(self, name: str) -> Member:
        path = clean(name)
        real = os.path.realpath(self._root / path)
        if os.path.commonpath([real, self._root]) != str(self._root):
            raise ArchiveInvalid("a link leaves the archive", {"member": path})
        try:
            info = os.stat(real)
        except FileNotFoundError:
            raise ArchiveInvalid("missing from the archive", {"member": path}) from None
        if not stat.S_ISREG(info.st_mode):
            raise ArchiveInvalid("not a regular file", {"member": path})
        return Member(path, info.st_size, Path(real), 0)

    def document(self, name: str) -> bytes:
        return _pread(self.member(name), DOCUMENT_LIMIT)


class TarContents:
    """A plain tar file, read in place."""

    def __init__(self, listing: Listing) -> None:
        self._listing = listing

    @classmethod
    def read(cls, path: Path) -> TarContents:
        """Read every header; the data in between is seeked over, not read."""
        listing = Listing(path, seekable=True)
        try:
            with tarfile.open(path, "r:", tarinfo=CheckedTarInfo) as tar:
                for info in tar:
                    listing.add(info)
        except tarfile.TarError as e:
            raise ArchiveInvalid(f"unreadable tar archive (truncated or corrupt): {e}") from None
        return cls(listing)

    def has(self, name: str) -> bool:
        return self._listing.has(name)

    def member(self, name: str) -> Member:
        return self._listing.member(name)

    def document(self, name: str) -> bytes:
        return _pread(self.member(name), DOCUMENT_LIMIT)


class StreamContents:
    """What one pass over a compressed tar kept: its listing and its JSON documents."""

    def __init__(self, listing: Listing, documents: dict[str, bytes]) -> None:
        self._listing = listing
        self._documents = documents

    def has(self, name: str) -> bool:
        return self._listing.has(name)

    def member(self, name: str) -> Member:
        return self._listing.member(name)

    def kept(self, name: str) -> bool:
        """Whether the member's bytes were kept in memory (JSON documents only are)."""
        return name in self._documents

    def document(self, name: str) -> bytes:
        member = self.member(name)
        if member.name not in self._documents:
            raise ArchiveInvalid("not a JSON document", {"member": member.name})
        return self._documents[member.name]


def looks_like_json(body: bytes) -> bool:
    return body.lstrip()[:1] in (b"{", b"[")


class TarStream:
    """A compressed tar, member after member, in one pass. Not thread-safe: one caller at a
    time (calls may come from different worker threads, one after the other)."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.listing = Listing(path, seekable=False)
        self._raw = _Counted(path.open("rb"))
        try:
            size = os.fstat(self._raw.fileno()).st_size
            self._budget = MAX_EXPANSION * size + EXPANSION_SLACK
            self._declared = 0
            raw = cast(IO[bytes], self._raw)
            data: IO[bytes]
            if kind == "gzip":
                data = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
            else:
                reader = zstandard.ZstdDecompressor().stream_reader(
                    raw, read_size=BLOCK, read_across_frames=True, closefd=False
                )
                data = cast(IO[bytes], reader)
            data = cast(IO[bytes], _Bounded(data, self._budget, size))
            self._data = data
            # Closed by `close`, like the files under it.
            self._tar = tarfile.open(  # noqa: SIM115
                fileobj=data, mode="r|", bufsize=BLOCK, tarinfo=CheckedTarInfo
            )
            self._current: tarfile.TarInfo | None = None
        except BaseException:
            self._raw.close()
            raise

    def next(self) -> Member | None:
        """The next regular file (other headers are recorded in the listing and passed)."""
        while True:
            info = self._tar.next()
            if info is None:
                return None
            self._declared += tarfile.BLOCKSIZE + info.size
            if self._declared > self._budget:
                raise _bomb(self._budget, {"declared_bytes": self._declared})
            member = self.listing.add(info)
            if member is not None:
                self._current = info
                return member

    def reader(self) -> IO[bytes]:
        """The bytes of the member `next` returned last."""
        assert self._current is not None, "no member yet"
        reader = self._tar.extractfile(self._current)
        assert reader is not None
        return reader

    def position(self) -> int:
        """Compressed bytes consumed so far (read from any thread, even after `close`)."""
        return self._raw.consumed

    def close(self) -> None:
        self._tar.close()
        self._data.close()
        self._raw.close()


class _Counted:
    """A file read forward only, counting what was read."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.consumed = 0

    def fileno(self) -> int:
        return self._file.fileno()

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self.consumed += len(data)
        return data

    def close(self) -> None:
        self._file.close()


class _Bounded:
    """Decompressed bytes, no more than `budget` of them: the work a bomb makes is bounded
    even where its headers lie."""

    def __init__(self, data: IO[bytes], budget: int, compressed: int) -> None:
        self._data = data
        self._budget = budget
        self._compressed = compressed
        self._read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._data.read(size)
        self._read += len(data)
        if self._read > self._budget:
            raise _bomb(self._budget, {"compressed_bytes": self._compressed})
        return data

    def close(self) -> None:
        self._data.close()


def _bomb(budget: int, detail: dict[str, object]) -> ArchiveTooLarge:
    return ArchiveTooLarge(
        f"a decompression bomb: it expands to more than {MAX_EXPANSION} times its size"
        f" ({budget} bytes)",
        detail,
        fix="compress it with gzip (which never expands that much), or not at all",
    )
