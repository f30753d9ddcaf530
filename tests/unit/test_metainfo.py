"""A chunk's piece hashes taken as its bytes are stored give the very torrent that hashing its
file gives (every node must compute the same infohash), however the bytes were cut into
blocks and transfers; bytes that did not come in order are never taken for the chunk."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.p2p import metainfo
from node.p2p.metainfo import PieceHashes
from node.store.chunking import MiB, chunk_count, chunk_name, chunk_range

DIGEST = "sha256:" + "a" * 64
SIZE = 9 * MiB + 5  # chunks of 4 MiB, 4 MiB and 1 MiB + 5; pieces of 256 KiB
DATA = random.Random("pieces").randbytes(SIZE)


def hashed_as_stored(index: int, cuts: list[int]) -> PieceHashes:
    """The chunk's bytes offered in blocks cut at `cuts`, each block in two parts."""
    start, end = chunk_range(SIZE, index)
    chunk = DATA[start:end]
    hashes = PieceHashes(SIZE)
    bounds = [0, *sorted({c % len(chunk) for c in cuts}), len(chunk)]
    for a, b in itertools.pairwise(bounds):
        middle = (a + b) // 2
        hashes.update(a, [chunk[a:middle], chunk[middle:b]])
    return hashes


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    index=st.integers(0, chunk_count(SIZE) - 1),
    cuts=st.lists(st.integers(0, 4 * MiB), max_size=12),
)
def test_hashes_taken_as_stored_make_the_torrent_of_the_file(
    tmp_path: Path, index: int, cuts: list[int]
) -> None:
    start, end = chunk_range(SIZE, index)
    path = tmp_path / chunk_name(DIGEST, index)
    path.write_bytes(DATA[start:end])
    pieces = hashed_as_stored(index, cuts).pieces(end - start)
    assert pieces is not None
    torrent = metainfo.from_pieces(DIGEST, SIZE, index, pieces)
    assert torrent == metainfo.from_file(path, DIGEST, SIZE, index)


def test_bytes_out_of_order_or_short_of_the_chunk_give_no_hashes() -> None:
    start, end = chunk_range(SIZE, 0)
    chunk = DATA[start:end]
    short = PieceHashes(SIZE)
    short.update(0, [chunk[:-1]])
    assert short.pieces(len(chunk)) is None
    raced = PieceHashes(SIZE)  # a stale writer and a new one, both at offset 0
    raced.update(0, [chunk[:MiB]])
    raced.update(0, [chunk[:MiB]])
    raced.update(MiB, [chunk[MiB:]])
    assert raced.pieces(len(chunk)) is None
