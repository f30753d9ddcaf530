"""How a blob is cut into chunks and pieces: pure functions of its size.

Every node must compute the same values for the same blob, so that the same bytes give the same
torrent infohash on every node (DESIGN section 2). Changing them splits the cluster's swarms.
"""

from __future__ import annotations

KiB = 1 << 10
MiB = 1 << 20
MIN_CHUNK = 4 * MiB
MAX_CHUNK = 16 * MiB
TARGET_CHUNKS = 64
MIN_PIECE = 256 * KiB


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def chunk_size(blob_size: int) -> int:
    target = -(-blob_size // TARGET_CHUNKS)
    return min(MAX_CHUNK, max(MIN_CHUNK, _next_pow2(target)))


def piece_size(blob_size: int) -> int:
    return max(MIN_PIECE, chunk_size(blob_size) // 16)


def chunk_count(blob_size: int) -> int:
    return -(-blob_size // chunk_size(blob_size))


def chunk_range(blob_size: int, index: int) -> tuple[int, int]:
    """[start, end) of chunk `index`."""
    size = chunk_size(blob_size)
    start = index * size
    if not 0 <= index < chunk_count(blob_size):
        raise IndexError(f"chunk {index} out of range for a blob of {blob_size} bytes")
    return start, min(blob_size, start + size)


def chunk_name(digest: str, index: int) -> str:
    """The torrent name of a chunk: `<hex digest>.<index>` (also its file name on disk)."""
    return f"{digest.partition(':')[2]}.{index}"
