"""Bounds on what one request may ask of the tracker, and the checks of every string it stores.

Every list a request carries is bounded here, and gRPC bounds the message size, so no request can
make the tracker's memory grow without limit. A failed check raises `InvalidArgument`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from tracker.errors import InvalidArgument

MAX_MESSAGE_BYTES = 16 << 20
MAX_CHUNKS_PER_BLOB = 1 << 16  # a 1 TiB blob in 16 MiB chunks
MAX_BLOB_SIZE = 1 << 42
MAX_BLOBS_PER_CALL = 10_000
MAX_REFS_PER_CALL = 10_000
MAX_METAINFO_BYTES = 256 << 10
MAX_TEXT = 255
MAX_REF = 1024

# OCI image-spec digest grammar: algorithm ":" encoded.
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_PRINTABLE = re.compile(r"[\x21-\x7e]+")


def digest(value: str) -> str:
    if len(value) > MAX_TEXT or not _DIGEST.fullmatch(value):
        raise InvalidArgument(f"not a digest: {value[:80]!r}")
    return value


def node_id(value: str) -> str:
    if not value or len(value) > MAX_TEXT or not _PRINTABLE.fullmatch(value):
        raise InvalidArgument(f"not a node id: {value[:80]!r}")
    return value


def flag_parser(check: Callable[[str], str]) -> Callable[[str], str]:
    """`check` as the parser of a flag whose value the tracker will check: a value it would
    refuse is refused at start (ValueError), not at every join."""

    def parse(text: str) -> str:
        try:
            return check(text)
        except InvalidArgument as e:
            raise ValueError(e.message) from None

    return parse


def address(value: str, what: str) -> str:
    """`host:port` or `[v6]:port`."""
    host, sep, port = value.rpartition(":")
    valid = (
        sep
        and host
        and len(value) <= MAX_TEXT
        and _PRINTABLE.fullmatch(value)
        and port.isdigit()
        and 0 < int(port) < 65536
    )
    if not valid:
        raise InvalidArgument(f"{what} is not host:port: {value[:80]!r}")
    return value


def zone(value: str) -> str:
    if len(value) > MAX_TEXT or (value and not _PRINTABLE.fullmatch(value)):
        raise InvalidArgument(f"not a zone name: {value[:80]!r}")
    return value


def ref(value: str) -> str:
    if not value or len(value) > MAX_REF or not _PRINTABLE.fullmatch(value):
        raise InvalidArgument(f"not an image reference: {value[:80]!r}")
    return value


def blob_shape(size: int, chunk_count: int) -> tuple[int, int]:
    if not 0 < chunk_count <= MAX_CHUNKS_PER_BLOB:
        raise InvalidArgument(f"chunk count {chunk_count} not in 1..{MAX_CHUNKS_PER_BLOB}")
    if not 0 <= size <= MAX_BLOB_SIZE or size < chunk_count - 1:
        raise InvalidArgument(f"blob size {size} does not fit {chunk_count} chunks")
    return size, chunk_count


def blob(value: str, size: int, chunk_count: int) -> None:
    """Raise unless the blob is well-formed: its digest, and a size its chunks can have."""
    digest(value)
    blob_shape(size, chunk_count)


def chunk_indices(indices: Iterable[int], chunk_count: int) -> frozenset[int]:
    chosen = frozenset(indices)
    if chosen and (min(chosen) < 0 or max(chosen) >= chunk_count):
        raise InvalidArgument(f"chunk index out of range 0..{chunk_count - 1}")
    return chosen


def count(items: int, bound: int, what: str) -> None:
    if items > bound:
        raise InvalidArgument(f"too many {what}: {items} > {bound}")


def metainfo(value: bytes) -> bytes:
    if not 0 < len(value) <= MAX_METAINFO_BYTES:
        raise InvalidArgument(f"metainfo of {len(value)} bytes not in 1..{MAX_METAINFO_BYTES}")
    return value
