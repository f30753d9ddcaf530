"""A blob the store has no room for is streamed straight from the upstream: whole, checked
against its digest before its last bytes go out; readers of a download that runs out of room
mid-way go on from the upstream where they were."""

from __future__ import annotations

import errno
import os
import random

import pytest

from node.blobs import BlobHandle
from node.downloads import HOLDBACK, Downloads, UpstreamFill
from node.errors import ContentInvalid
from node.store.backend import Segment
from node.store.contentstore import ContentStore
from node.store.memory import MemoryBlobs
from node.store.metadata import Metadata
from tests.unit.test_downloads import MemorySource, digest_of

SIZE = 3 << 20


async def received(handle: BlobHandle, start: int, end: int, into: bytearray) -> None:
    async for piece in handle.pieces(start, end):
        assert not isinstance(piece, Segment)
        into += piece


async def test_a_blob_streamed_through_is_whole_and_stored_nowhere() -> None:
    data = random.Random("through").randbytes(SIZE)
    source = MemorySource(data)
    source.gate.set()
    store = ContentStore.memory()
    handle = BlobHandle(digest_of(data), SIZE, None, None, store, upstream=source)
    got = bytearray()
    await received(handle, 0, SIZE, got)
    assert bytes(got) == data
    assert handle.source_at(0) == "upstream"
    part = bytearray()
    await received(handle, 1000, 5000, part)  # a Range: straight from the upstream as well
    assert bytes(part) == data[1000:5000]
    assert source.offsets == [0, 1000]
    assert store.blobs() == []


async def test_wrong_bytes_streamed_through_never_make_a_whole_response() -> None:
    data = random.Random("wrong").randbytes(SIZE)
    wrong = data[:-1] + bytes([data[-1] ^ 1])
    source = MemorySource(wrong)
    source.gate.set()
    handle = BlobHandle(digest_of(data), SIZE, None, None, ContentStore.memory(), upstream=source)
    got = bytearray()
    with pytest.raises(ContentInvalid):
        await received(handle, 0, SIZE, got)
    assert len(got) <= SIZE - HOLDBACK


class FailingDisk(MemoryBlobs):
    """A disk that fails every write with EIO once `good` bytes are on it: a dying disk."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.good = good

    def allocate(self, length: int) -> None:
        if length > 0 and self.good < length:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        self.good -= max(0, length)
        super().allocate(length)


@pytest.mark.parametrize("disk", ["full", "failing"])
async def test_readers_of_a_download_the_disk_takes_no_more_of_go_on_from_the_upstream(
    disk: str,
) -> None:
    """The disk full a third of the way in, or failing with EIO there (which used to answer
    the client 500): it costs the store the blob, not the client its pull."""
    data = random.Random(disk).randbytes(SIZE)
    digest = digest_of(data)
    source = MemorySource(data, hold_at=512 << 10)  # until the reader has its first bytes
    if disk == "full":
        store = ContentStore.memory(capacity=1 << 20)  # a third of the blob
    else:
        store = ContentStore(FailingDisk(good=1 << 20), Metadata(None))
    troubles: list[str] = []
    store.on_trouble = troubles.append
    download = Downloads(store).start(digest, UpstreamFill(digest, source))
    handle = BlobHandle(digest, SIZE, None, download, store, upstream=source)
    got = bytearray()
    async for piece in handle.pieces(0, SIZE):
        assert not isinstance(piece, Segment)
        got += piece
        source.gate.set()
    assert bytes(got) == data
    assert source.offsets[0] == 0 and 0 < source.offsets[1] <= 1 << 20
    assert handle.source_at(SIZE - 1) == "upstream"
    assert store.stat(digest) is None
    assert troubles == ["disk_full" if disk == "full" else "io_error"]
    assert download.task is not None
    await download.task
    assert store.usage() == 0
