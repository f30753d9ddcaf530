"""Deterministic chunk torrents (DESIGN section 2).

A chunk's info dict holds only `name` (`<hex digest>.<index>`), `length`, `piece length`,
`pieces` and `private: 1`, and the sizes are pure functions of the blob size, so every node that
holds the same bytes computes the same infohash. Metainfo received from the tracker is checked
against what the chunk must look like before it is used; its piece hashes are checked by
libtorrent as pieces arrive, and the whole blob's sha256 at the end.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from node.store.chunking import chunk_name, chunk_range, piece_size

Bencodable = int | bytes | str | list["Bencodable"] | dict[bytes, "Bencodable"]


class MetainfoInvalid(ValueError):
    """Metainfo that does not describe the chunk it claims to."""


def bencode(value: Bencodable) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    items = sorted(value.items())
    return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"


def bdecode(data: bytes) -> Bencodable:
    value, end = _decode(data, 0)
    if end != len(data):
        raise MetainfoInvalid("trailing bytes after bencoded value")
    return value


def _decode(data: bytes, i: int) -> tuple[Bencodable, int]:
    try:
        kind = data[i : i + 1]
        if kind == b"i":
            end = data.index(b"e", i)
            return int(data[i + 1 : end]), end + 1
        if kind == b"l":
            items: list[Bencodable] = []
            i += 1
            while data[i : i + 1] != b"e":
                item, i = _decode(data, i)
                items.append(item)
            return items, i + 1
        if kind == b"d":
            mapping: dict[bytes, Bencodable] = {}
            i += 1
            while data[i : i + 1] != b"e":
                key, i = _decode(data, i)
                if not isinstance(key, bytes):
                    raise MetainfoInvalid("dictionary key is not a string")
                mapping[key], i = _decode(data, i)
            return mapping, i + 1
        colon = data.index(b":", i)
        length = int(data[i:colon])
        start = colon + 1
        if length < 0 or start + length > len(data):
            raise MetainfoInvalid("string runs past the end")
        return data[start : start + length], start + length
    except (ValueError, IndexError) as e:
        raise MetainfoInvalid(f"malformed bencoding: {e}") from None


@dataclass(frozen=True)
class ChunkTorrent:
    digest: str
    index: int
    metainfo: bytes  # bencoded {"info": {...}}
    infohash: str  # hex sha1 of the bencoded info dict

    @property
    def name(self) -> str:
        return chunk_name(self.digest, self.index)


def _torrent(digest: str, index: int, length: int, piece: int, pieces: bytes) -> ChunkTorrent:
    info: dict[bytes, Bencodable] = {
        b"name": chunk_name(digest, index),
        b"length": length,
        b"piece length": piece,
        b"pieces": pieces,
        b"private": 1,
    }
    encoded_info = bencode(info)
    metainfo = b"d4:info" + encoded_info + b"e"
    return ChunkTorrent(digest, index, metainfo, hashlib.sha1(encoded_info).hexdigest())


class PieceHashes:
    """The SHA-1 of each piece of a chunk, taken from its bytes as they are stored, in order
    from the chunk's first byte, so the metainfo needs no read-back once the last byte is in.
    Bytes offered at any other offset than the next (a stale writer racing a new one) leave the
    hashes unusable (`pieces` is then None): the chunk is hashed from its file instead."""

    def __init__(self, blob_size: int) -> None:
        self._piece = piece_size(blob_size)
        self._lock = threading.Lock()  # updated from worker threads
        self._hash = hashlib.sha1()
        self._in_piece = 0
        self._done: list[bytes] = []
        self._broken = False
        self.length = 0  # bytes hashed

    def update(self, offset: int, parts: list[bytes]) -> None:
        """Hash `parts`, stored at `offset` of the chunk (run in a thread)."""
        with self._lock:
            if offset != self.length:
                self._broken = True
            if self._broken:
                return
            for part in parts:
                self._add(memoryview(part))
                self.length += len(part)

    def _add(self, view: memoryview) -> None:
        while view:
            taken = view[: self._piece - self._in_piece]
            self._hash.update(taken)
            self._in_piece += len(taken)
            view = view[len(taken) :]
            if self._in_piece == self._piece:
                self._done.append(self._hash.digest())
                self._hash, self._in_piece = hashlib.sha1(), 0

    def pieces(self, length: int) -> bytes | None:
        """The concatenated piece hashes of a chunk of `length` bytes, if exactly those bytes
        were hashed in order."""
        with self._lock:
            if self._broken or self.length != length:
                return None
            last = [self._hash.digest()] if self._in_piece else []
            return b"".join(self._done + last)


def from_file(path: Path, digest: str, blob_size: int, index: int) -> ChunkTorrent:
    """The chunk torrent of a chunk file on disk (hashing it: run in a thread)."""
    start, end = chunk_range(blob_size, index)
    piece = piece_size(blob_size)
    hashes = []
    with path.open("rb") as f:
        for offset in range(0, end - start, piece):
            data = f.read(min(piece, end - start - offset))
            if len(data) < min(piece, end - start - offset):
                raise MetainfoInvalid(f"{path} is shorter than its chunk")
            hashes.append(hashlib.sha1(data).digest())
    return from_pieces(digest, blob_size, index, b"".join(hashes))


def from_pieces(digest: str, blob_size: int, index: int, pieces: bytes) -> ChunkTorrent:
    """The chunk torrent whose piece hashes (sha1, concatenated) are `pieces`."""
    start, end = chunk_range(blob_size, index)
    return _torrent(digest, index, end - start, piece_size(blob_size), pieces)


def parse(metainfo: bytes, digest: str, blob_size: int, index: int) -> ChunkTorrent:
    """Metainfo from another node, accepted only if it has exactly the expected shape."""
    document = bdecode(metainfo)
    if not isinstance(document, dict) or set(document) != {b"info"}:
        raise MetainfoInvalid("metainfo must hold only an info dict")
    info = document[b"info"]
    if not isinstance(info, dict):
        raise MetainfoInvalid("info is not a dictionary")
    start, end = chunk_range(blob_size, index)
    piece = piece_size(blob_size)
    pieces = info.get(b"pieces")
    if not isinstance(pieces, bytes) or len(pieces) != 20 * -(-(end - start) // piece):
        raise MetainfoInvalid("wrong number of piece hashes")
    expected = _torrent(digest, index, end - start, piece, pieces)
    if expected.metainfo != metainfo:
        raise MetainfoInvalid("metainfo is not the chunk's canonical torrent")
    return expected
