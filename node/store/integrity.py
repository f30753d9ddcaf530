"""Whether stored bytes still match their digests, and what the store tells when they do not.

A blob recorded as stored was verified when it was written. Two things can break that since: a
stop before its bytes were on disk (a crash, then a power loss: the page cache's unwritten pages
are gone, a file reads as zeros), and rot (a bad disk, a stray write). The store keeps the first
kind apart, as suspects: blobs not known to be on disk at start, hidden until verified; the scrub
verifies the rest from time to time. A verification reads the chunk files from the disk, not
from the page cache, hashes them in a worker thread, one block at a time, paced by its caller;
where the store keeps a blob's chunk torrents, their piece hashes are checked in the same pass.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from node.store.backend import BlobBackend
    from node.store.contentstore import BlobInfo

from node.store.chunking import MIN_CHUNK, chunk_count, chunk_size, piece_size

VERIFY_BLOCK = 1 << 20
assert MIN_CHUNK % VERIFY_BLOCK == 0

# Awaited with each block's length before it is read: the scrub sleeps there to keep its rate.
Pace = Callable[[int], Awaitable[None]]
# The canonical metainfo of a chunk torrent: (digest, blob size, chunk index, its pieces' sha1
# hashes concatenated) -> metainfo bytes (`node.p2p.metainfo`, which the store does not import).
CanonicalTorrent = Callable[[str, int, int, bytes], bytes]

RECOVERY = "recovery"  # found not known to be on disk at start
SCRUB = "scrub"  # re-verified by the background scrub
SWARM = "swarm"  # a seeded chunk failed its hash: asked for by a peer, or checked on its report


class Verdict(Enum):
    GOOD = "good"
    BAD = "bad"  # purged
    GONE = "gone"  # deleted or replaced while it was verified


@dataclass(frozen=True)
class Damaged:
    """A blob found damaged and purged, with what it takes to fetch it again."""

    digest: str
    size: int
    found_by: str
    origin: tuple[str, str] | None  # (namespace, repository) it was fetched from
    owners: frozenset[str]  # who pinned it (seeded archives)


class IntegrityEvents(Protocol):
    """What the store tells the node about its content's integrity (on the event loop)."""

    def restored(self, info: BlobInfo) -> None:
        """A blob was read back whole and matched its digest: a suspect is served from now on,
        and chunks of it withdrawn from the cluster may be seeded again."""

    def damaged(self, blob: Damaged) -> None:
        """A blob was found damaged and purged."""

    def verified(self, reason: str, length: int) -> None:
        """`length` more bytes were read back and hashed."""


class NoEvents:
    def restored(self, info: BlobInfo) -> None:
        pass

    def damaged(self, blob: Damaged) -> None:
        pass

    def verified(self, reason: str, length: int) -> None:
        pass


@dataclass
class Reading:
    """What reading a stored blob back found."""

    matches: bool  # its bytes hash to its digest
    pieces: list[bytes]  # per chunk, its pieces' sha1 hashes, concatenated (if asked for)


async def read_back(
    backend: BlobBackend, digest: str, size: int, pace: Pace | None, pieces: bool
) -> Reading:
    """Hash the stored bytes (and, with `pieces`, each torrent piece). OSError when they cannot
    be read. A block never straddles a chunk, and a piece never straddles a block: chunks are
    multiples of blocks, blocks of pieces (`node.store.chunking`)."""
    hasher = hashlib.sha256()
    chunk, piece = chunk_size(size), piece_size(size)
    chunks: list[list[bytes]] = [[] for _ in range(chunk_count(size))]
    for start in range(0, size, VERIFY_BLOCK):
        end = min(size, start + VERIFY_BLOCK)
        if pace is not None:
            await pace(end - start)
        block = await asyncio.to_thread(_hash_block, hasher, backend, digest, size, start, end)
        if pieces:
            hashes = await asyncio.to_thread(_piece_hashes, block, piece)
            chunks[start // chunk] += hashes
    return Reading("sha256:" + hasher.hexdigest() == digest, [b"".join(c) for c in chunks])


def _hash_block(
    hasher: hashlib._Hash,
    backend: BlobBackend,
    digest: str,
    size: int,
    start: int,
    end: int,
) -> bytes:
    block = backend.read(digest, size, start, end, from_disk=True)
    hasher.update(block)
    return block


def _piece_hashes(block: bytes, piece: int) -> list[bytes]:
    view = memoryview(block)
    return [hashlib.sha1(view[i : i + piece]).digest() for i in range(0, len(block), piece)]
