"""One conformance suite for the content store over each backend: chunk files on disk and
memory. Whatever the backend, a blob is visible only once verified, and eviction keeps what is
in use or pinned."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node.errors import BlobUnknown, ContentInvalid
from node.store.chunking import MiB
from node.store.contentstore import ContentStore

StoreFactory = Callable[..., ContentStore]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["disk", "memory"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    stores: list[ContentStore] = []

    def make(**options: object) -> ContentStore:
        if request.param == "disk":
            store = ContentStore.open(tmp_path / "data", **options)
        else:
            store = ContentStore.memory(**options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


async def read(store: ContentStore, digest: str, start: int = 0, end: int | None = None) -> bytes:
    info = store.require(digest)
    return b"".join([b async for b in store.read(info, start, end)])


async def test_put_then_read_back(make_store: StoreFactory) -> None:
    store = make_store()
    data = b"hello layer"
    info = await store.put(digest_of(data), data, "text/plain")
    assert (info.size, info.media_type) == (len(data), "text/plain")
    assert await read(store, digest_of(data)) == data


async def test_multi_chunk_blob_reads_back_across_chunk_boundaries(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    data = bytes(range(256)) * (9 * MiB // 256) + b"tail"  # three 4 MiB chunks
    digest = digest_of(data)
    writer = store.begin(digest, len(data))
    for i in range(0, len(data), 777_777):
        await writer.write(data[i : i + 777_777])
    await writer.commit()
    assert await read(store, digest) == data
    assert await read(store, digest, 4 * MiB - 3, 4 * MiB + 5) == data[4 * MiB - 3 : 4 * MiB + 5]


async def test_wrong_bytes_are_never_visible(make_store: StoreFactory) -> None:
    store = make_store()
    claimed = digest_of(b"the real thing")
    with pytest.raises(ContentInvalid):
        await store.put(claimed, b"something else")
    assert store.stat(claimed) is None
    with pytest.raises(BlobUnknown):
        store.require(claimed)


async def test_short_and_long_writes_are_refused(make_store: StoreFactory) -> None:
    store = make_store()
    data = b"0123456789"
    writer = store.begin(digest_of(data), len(data))
    await writer.write(data[:5])
    with pytest.raises(ContentInvalid, match="size"):
        await writer.commit()
    writer = store.begin(digest_of(data), len(data))
    with pytest.raises(ContentInvalid):
        await writer.write(data + b"!")
    assert store.stat(digest_of(data)) is None


async def test_storing_existing_content_counts_as_written(make_store: StoreFactory) -> None:
    store = make_store()
    data = b"same bytes"
    first = store.begin(digest_of(data), len(data))
    second = store.begin(digest_of(data), len(data))
    await first.write(data)
    await second.write(data)
    await first.commit()
    await second.commit()
    assert await read(store, digest_of(data)) == data
    assert store.usage() == len(data)


async def test_partial_reads_while_writing(make_store: StoreFactory) -> None:
    store = make_store()
    data = b"a" * 1000 + b"b" * 1000
    writer = store.begin(digest_of(data), len(data))
    await writer.write(data[:1000])
    await writer.flush()
    assert await writer.read(10, 20) == data[10:20]
    with pytest.raises(ValueError):
        await writer.read(900, 1100)
    assert store.stat(digest_of(data)) is None


async def test_eviction_keeps_pinned_and_busy_blobs(make_store: StoreFactory) -> None:
    store = make_store(max_bytes=3000, low_watermark=0.5)
    blobs = [bytes([i]) * 1000 for i in range(3)]
    for blob in blobs:
        await store.put(digest_of(blob), blob)
    store.pin(digest_of(blobs[0]), "archive-a")
    with store.using(digest_of(blobs[1])):
        newest = b"x" * 1000
        await store.put(digest_of(newest), newest)
    # Over quota (4000 > 3000): the only evictable old blob is blobs[2].
    assert store.stat(digest_of(blobs[2])) is None
    assert store.stat(digest_of(blobs[0])) is not None
    assert store.stat(digest_of(blobs[1])) is not None
    store.unpin("archive-a")
    assert store.evict() == 0  # 3000 is within the quota again


async def test_eviction_frees_least_recently_used_first(make_store: StoreFactory) -> None:
    store = make_store(max_bytes=2500, low_watermark=0.8)
    old, recent = b"o" * 1000, b"r" * 1000
    await store.put(digest_of(old), old)
    await store.put(digest_of(recent), recent)
    await read(store, digest_of(old))  # `old` becomes the most recently used
    await read(store, digest_of(recent))
    await read(store, digest_of(old))
    await store.put(digest_of(b"n" * 1000), b"n" * 1000)
    assert store.stat(digest_of(recent)) is None
    assert store.stat(digest_of(old)) is not None


async def test_tags_remember_digest_and_type(make_store: StoreFactory) -> None:
    store = make_store()
    store.set_tag("docker.io", "library/nginx", "1.25", "sha256:" + "a" * 64, "application/x")
    record = store.tag("docker.io", "library/nginx", "1.25")
    assert record is not None
    assert (record.digest, record.media_type) == ("sha256:" + "a" * 64, "application/x")
    assert store.tag("docker.io", "library/nginx", "1.26") is None


async def test_disk_store_keeps_content_across_restart_and_drops_partials(tmp_path: Path) -> None:
    data = b"persisted" * 1000
    store = ContentStore.open(tmp_path)
    await store.put(digest_of(data), data, "application/octet-stream")
    store.set_tag("r", "n", "t", digest_of(data), "application/octet-stream")
    partial = store.begin(digest_of(b"never finished"), 14)
    await partial.write(b"never")
    store.close()

    reopened = ContentStore.open(tmp_path)
    try:
        assert await read(reopened, digest_of(data)) == data
        assert reopened.tag("r", "n", "t") is not None
        assert reopened.stat(digest_of(b"never finished")) is None
        assert list((tmp_path / "tmp").iterdir()) == []
    finally:
        reopened.close()


async def test_disk_store_forgets_blobs_whose_files_vanished(tmp_path: Path) -> None:
    data = b"z" * (5 * MiB)
    store = ContentStore.open(tmp_path)
    await store.put(digest_of(data), data)
    store.close()
    chunk = next((tmp_path / "blobs").glob("*/*/*/*.1"))
    chunk.write_bytes(b"truncated")
    reopened = ContentStore.open(tmp_path)
    try:
        assert reopened.stat(digest_of(data)) is None
    finally:
        reopened.close()
