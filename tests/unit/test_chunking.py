from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from node.store.chunking import MiB, chunk_count, chunk_range, chunk_size, piece_size


def test_chunk_and_piece_sizes_follow_the_cluster_wide_rule() -> None:
    assert chunk_size(1) == 4 * MiB
    assert chunk_size(256 * MiB) == 4 * MiB
    assert chunk_size(512 * MiB) == 8 * MiB
    assert chunk_size(10_000 * MiB) == 16 * MiB
    assert piece_size(1) == 256 * 1024
    assert piece_size(10_000 * MiB) == 1 * MiB


@given(st.integers(min_value=0, max_value=1 << 36))
def test_chunks_tile_the_blob(size: int) -> None:
    ranges = [chunk_range(size, i) for i in range(chunk_count(size))]
    assert sum(end - start for start, end in ranges) == size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert chunk_count(size) <= max(64, -(-size // (16 * MiB)))
