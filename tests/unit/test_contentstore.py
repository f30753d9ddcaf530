"""One conformance suite for the content store over each backend: chunk files on disk and
memory. Whatever the backend, a blob is visible only once verified, and eviction keeps what is
in use or pinned."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from node.errors import BlobUnknown, ContentInvalid, StoreFull
from node.p2p import metainfo
from node.store import metadata
from node.store.chunking import MiB, chunk_name, chunk_size, piece_size
from node.store.contentstore import DISK_RESERVE, BlobInfo, ContentStore
from node.store.integrity import RECOVERY, SCRUB, SWARM, Damaged, Verdict
from node.store.metadata import open_metadata
from tests.support import powerloss

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


async def test_chunk_files_put_in_place_by_others_are_adopted_only_when_they_match(
    tmp_path: Path,
) -> None:
    """What the swarm and range fetches do: bytes written straight into the writer's chunk
    files, then adopted in order, read back and hashed over many read blocks."""
    store = ContentStore.open(tmp_path / "data")
    data = random.Random("adopt").randbytes(9 * MiB + 5)  # three chunks of 4 MiB
    step = chunk_size(len(data))
    for damaged in (True, False):
        placed = bytearray(data)
        placed[-1] ^= damaged
        writer = store.begin(digest_of(data), len(data))
        assert writer.directory is not None
        for index, offset in enumerate(range(0, len(data), step)):
            path = writer.directory / chunk_name(digest_of(data), index)
            path.write_bytes(placed[offset : offset + step])
            await writer.adopt(len(placed[offset : offset + step]))
        if damaged:
            with pytest.raises(ContentInvalid, match="digest"):
                await writer.commit()
            assert store.stat(digest_of(data)) is None
        else:
            await writer.commit()
    assert await read(store, digest_of(data)) == data
    store.close()


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


async def test_the_tags_of_an_evicted_manifest_go_with_it(make_store: StoreFactory) -> None:
    store = make_store(max_bytes=2500, low_watermark=0.8)
    manifest, other = b"m" * 1000, b"o" * 1000
    await store.put(digest_of(manifest), manifest)
    for tag in ("1", "latest"):
        store.set_tag("docker.io", "library/app", tag, digest_of(manifest), "application/x")
    store.set_tag("docker.io", "library/app", "2", digest_of(other), "application/x")
    await store.put(digest_of(other), other)
    await store.put(digest_of(b"n" * 1000), b"n" * 1000)  # over quota: `manifest` goes
    assert store.stat(digest_of(manifest)) is None
    assert store.tag("docker.io", "library/app", "1") is None
    assert store.tag("docker.io", "library/app", "latest") is None
    assert store.tag("docker.io", "library/app", "2") is not None


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
        assert await reopened.check(digest_of(data)) is None
        assert reopened.blobs() == []
        assert reopened.directory(digest_of(data)) is not None
        assert not chunk.exists()
    finally:
        reopened.close()


# -- integrity: verification, suspects, durability


class Events:
    """The store's integrity events, recorded."""

    def __init__(self) -> None:
        self.restored: list[str] = []
        self.damaged: list[Damaged] = []
        self.verified: dict[str, int] = {}

    def restored_(self, info: BlobInfo) -> None:
        self.restored.append(info.digest)

    def damaged_(self, blob: Damaged) -> None:
        self.damaged.append(blob)

    def verified_(self, reason: str, length: int) -> None:
        self.verified[reason] = self.verified.get(reason, 0) + length


def listen(store: ContentStore) -> Events:
    events = Events()
    store.events = SimpleNamespace(  # type: ignore[assignment]
        restored=events.restored_, damaged=events.damaged_, verified=events.verified_
    )
    return events


def damage(store: ContentStore, digest: str, offset: int) -> None:
    """Flip one stored byte, as a bad disk would."""
    directory = store.directory(digest)
    if directory is None:
        blobs = store._backend.blobs  # type: ignore[attr-defined]
        data = bytearray(blobs[digest])
        data[offset] ^= 0xFF
        blobs[digest] = bytes(data)
        return
    info = store.require(digest)
    index, within = divmod(offset, chunk_size(info.size))
    with (directory / chunk_name(digest, index)).open("r+b") as f:
        f.seek(within)
        byte = f.read(1)
        f.seek(within)
        f.write(bytes([byte[0] ^ 0xFF]))


def canonical(digest: str, size: int, index: int, pieces: bytes) -> bytes:
    return metainfo.from_pieces(digest, size, index, pieces).metainfo


async def test_verify_keeps_good_blobs_and_purges_damaged_ones(make_store: StoreFactory) -> None:
    store = make_store()
    events = listen(store)
    good, bad = b"g" * (5 * MiB), b"b" * (5 * MiB)
    for data in (good, bad):
        await store.put(digest_of(data), data)
    store.set_origin(digest_of(bad), "registry.example", "team/app")
    store.pin(digest_of(bad), "seed:archive")
    damage(store, digest_of(bad), 4 * MiB + 17)

    assert await store.verify(digest_of(good), SCRUB) is Verdict.GOOD
    assert await store.verify(digest_of(bad), SCRUB) is Verdict.BAD
    assert await read(store, digest_of(good)) == good
    assert store.stat(digest_of(bad)) is None
    assert events.damaged == [
        Damaged(
            digest_of(bad),
            len(bad),
            SCRUB,
            ("registry.example", "team/app"),
            frozenset({"seed:archive"}),
        )
    ]
    assert events.verified == {SCRUB: 2 * 5 * MiB}
    assert await store.verify(digest_of(bad), SCRUB) is Verdict.GONE


async def test_a_suspected_blob_is_served_only_once_verified(make_store: StoreFactory) -> None:
    """A blob found damaged in part is kept (its chunks may still be seeded) but hidden from
    clients; the next ask verifies it: a damaged one is purged, an intact one served again."""
    store = make_store()
    events = listen(store)
    good, bad = b"g" * (5 * MiB), b"b" * (5 * MiB)
    for data in (good, bad):
        await store.put(digest_of(data), data)
    damage(store, digest_of(bad), 4 * MiB + 17)
    for data in (good, bad):
        store.suspect(digest_of(data), SWARM)
        assert store.stat(digest_of(data)) is None
        assert digest_of(data) not in {info.digest for info in store.blobs()}
        assert store.size(digest_of(data)) == len(data)
    assert await store.check(digest_of(bad)) is None
    assert [(d.digest, d.found_by) for d in events.damaged] == [(digest_of(bad), SWARM)]
    assert store.size(digest_of(bad)) is None
    assert await store.check(digest_of(good)) == BlobInfo(digest_of(good), len(good), None)
    assert await read(store, digest_of(good)) == good


async def test_a_suspected_blob_is_verified_at_the_next_start(tmp_path: Path) -> None:
    store = ContentStore.open(tmp_path)
    data = b"s" * (5 * MiB)
    await store.put(digest_of(data), data)
    store.suspect(digest_of(data), SWARM)
    store.close()
    reopened = ContentStore.open(tmp_path)
    try:
        assert reopened.suspects() == [digest_of(data)]
        assert reopened.stat(digest_of(data)) is None
    finally:
        reopened.close()


async def test_scrub_takes_the_blob_verified_longest_ago(make_store: StoreFactory) -> None:
    store = make_store()
    first, second = b"first", b"second"
    await store.put(digest_of(first), first)
    await store.put(digest_of(second), second)
    assert store.due_for_scrub(3600) is None  # both verified as they were written
    due = store.due_for_scrub(0)
    assert due is not None and due.digest == digest_of(first)
    await store.verify(digest_of(first), SCRUB)
    due = store.due_for_scrub(0)
    assert due is not None and due.digest == digest_of(second)


async def test_verify_pace_is_awaited_for_every_block(make_store: StoreFactory) -> None:
    store = make_store()
    data = bytes(range(256)) * (3 * MiB // 256 + 1)
    await store.put(digest_of(data), data)
    paced: list[int] = []

    async def pace(length: int) -> None:
        paced.append(length)

    assert await store.verify(digest_of(data), SCRUB, pace) is Verdict.GOOD
    assert paced == [MiB, MiB, MiB, len(data) - 3 * MiB]


async def test_verify_drops_chunk_torrents_that_do_not_match_the_bytes(
    make_store: StoreFactory,
) -> None:
    store = make_store(canonical_torrent=canonical)
    data = bytes(range(256)) * (9 * MiB // 256)
    digest = digest_of(data)
    await store.put(digest, data)
    right = [
        canonical(digest, len(data), i, b"".join(pieces))
        for i, pieces in enumerate(chunk_pieces(data))
    ]
    store.set_torrents(digest, right)
    assert await store.verify(digest, SCRUB) is Verdict.GOOD
    assert store.torrents(digest) == right
    store.set_torrents(digest, [*right[:-1], canonical(digest, len(data), 2, b"\0" * 20 * 4)])
    assert await store.verify(digest, SCRUB) is Verdict.GOOD
    assert store.torrents(digest) == []
    assert await read(store, digest) == data


def chunk_pieces(data: bytes) -> list[list[bytes]]:
    step, piece = chunk_size(len(data)), piece_size(len(data))
    return [
        [
            hashlib.sha1(data[p : min(p + piece, start + step, len(data))]).digest()
            for p in range(start, min(start + step, len(data)), piece)
        ]
        for start in range(0, len(data), step)
    ]


def crashed(data_dir: Path, **options: object) -> ContentStore:
    """A store opened while another, never closed, still holds the directory: what a store
    finds after its node was killed."""
    return ContentStore.open(data_dir, **options)  # type: ignore[arg-type]


async def test_stored_blob_is_on_disk_before_it_is_recorded(tmp_path: Path) -> None:
    store = ContentStore.open(tmp_path)
    try:
        data = random.Random("durable").randbytes(9 * MiB)
        await store.put(digest_of(data), data)
        directory = store.directory(digest_of(data))
        assert directory is not None
        chunks = sorted(directory.iterdir())
        assert len(chunks) == 3
        assert [powerloss.dirty_pages(c) for c in chunks] == [0, 0, 0]
    finally:
        store.close()


async def test_unsynced_blobs_after_a_crash_are_served_only_once_verified(
    tmp_path: Path,
) -> None:
    before = ContentStore.open(tmp_path, fsync=False)
    good, bad = b"g" * (5 * MiB), b"b" * (5 * MiB)
    for data in (good, bad):
        await before.put(digest_of(data), data)
    damage(before, digest_of(bad), 5)
    after = crashed(tmp_path)
    events = listen(after)
    try:
        assert after.suspects() == sorted([digest_of(good), digest_of(bad)])
        assert after.stat(digest_of(good)) is None
        assert after.blobs() == []
        info = await after.check(digest_of(good))
        assert info is not None and info.size == len(good)
        assert await read(after, digest_of(good)) == good
        assert await after.check(digest_of(bad)) is None
        assert events.restored == [digest_of(good)]
        assert [d.digest for d in events.damaged] == [digest_of(bad)]
        assert events.verified == {RECOVERY: 2 * 5 * MiB}
        assert after.suspects() == []
        directory = after.directory(digest_of(good))
        assert directory is not None
        assert [powerloss.dirty_pages(p) for p in directory.iterdir()] == [0, 0]
    finally:
        after.close()
        before.close()
    reopened = ContentStore.open(tmp_path)
    try:
        assert reopened.suspects() == []  # verified and synced: known durable from now on
    finally:
        reopened.close()


async def test_a_clean_stop_puts_unsynced_blobs_on_disk(tmp_path: Path) -> None:
    store = ContentStore.open(tmp_path, fsync=False)
    data = b"u" * (5 * MiB)
    await store.put(digest_of(data), data)
    store.close()
    reopened = ContentStore.open(tmp_path, fsync=False)
    try:
        assert reopened.suspects() == []
        assert await read(reopened, digest_of(data)) == data
    finally:
        reopened.close()


async def test_fresh_bytes_replace_a_suspect(tmp_path: Path) -> None:
    before = ContentStore.open(tmp_path, fsync=False)
    data = b"r" * (5 * MiB)
    await before.put(digest_of(data), data)
    damage(before, digest_of(data), 1)
    after = crashed(tmp_path)
    try:
        await after.put(digest_of(data), data)
        assert after.suspects() == []
        assert await read(after, digest_of(data)) == data
    finally:
        after.close()
        before.close()


async def test_a_store_from_before_durability_is_verified_once(tmp_path: Path) -> None:
    store = ContentStore.open(tmp_path)
    data = b"legacy" * 1000
    await store.put(digest_of(data), data)
    store.close()
    # What the store looked like before blobs knew whether they were on disk.
    with sqlite3.connect(tmp_path / "metadata.sqlite") as db:
        db.execute("DROP INDEX blobs_by_verification")
        db.execute("ALTER TABLE blobs DROP COLUMN durable")
        db.execute("ALTER TABLE blobs DROP COLUMN verified_at")
    reopened = ContentStore.open(tmp_path)
    try:
        assert reopened.suspects() == [digest_of(data)]
        assert await reopened.check(digest_of(data)) is not None
    finally:
        reopened.close()
    again = ContentStore.open(tmp_path)
    try:
        assert again.suspects() == []
    finally:
        again.close()


# -- a full disk


def failing_metadata(store: ContentStore) -> None:
    """From now on every SQLite write fails (as on a full disk)."""
    store._meta._db.execute("PRAGMA query_only = ON")  # type: ignore[attr-defined]


async def test_a_write_that_runs_out_of_space_fails_with_store_full() -> None:
    store = ContentStore.memory(capacity=10 * MiB)
    troubles: list[str] = []
    store.on_trouble = troubles.append
    small, big = b"s" * MiB, b"b" * (12 * MiB)
    await store.put(digest_of(small), small)
    writer = store.begin(digest_of(big), len(big))
    with pytest.raises(StoreFull):
        for start in range(0, len(big), MiB):
            await writer.write(big[start : start + MiB])
        await writer.commit()
    writer.abort()
    assert store.stat(digest_of(big)) is None
    assert store.usage() == len(small)
    assert troubles == ["disk_full"]
    assert not await store.keep(digest_of(big), big)  # small content: not an error
    assert await store.keep(digest_of(b"fits"), b"fits")
    store.close()


async def test_blocks_queued_after_a_failed_write_are_never_counted_as_written(
    make_store: StoreFactory,
) -> None:
    """The disk full for a moment: the block that failed fails the blob, and the blocks queued
    behind it, though the disk took them, are never offered to the readers following it."""
    store = make_store()
    data = random.Random("queued").randbytes(4 * MiB)
    writer = store.begin(digest_of(data), len(data))
    pending: Any = writer._pending
    write, calls = pending.write, []

    def full_once(part: bytes) -> None:
        calls.append(len(part))
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(part)

    pending.write = full_once
    for start in range(0, len(data), MiB):  # all four queued before the second lands
        await writer.write(data[start : start + MiB])
    with pytest.raises(StoreFull):
        await writer.flush()
    assert len(calls) == 4
    assert writer.written == MiB
    writer.abort()


async def test_a_block_the_disk_takes_only_part_of_is_never_counted_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that fills up in the middle of a block takes what fits and says so (a short
    write), and refuses the next write: readers following the blob are offered only the bytes
    that are in its files (counted whole, the missing ones were sent as a short transfer that
    its client waited on forever)."""
    store = ContentStore.open(tmp_path / "data")
    data = random.Random("short").randbytes(4 * MiB)
    room, taken = MiB + (300 << 10), 0
    real_pwrite = os.pwrite

    def disk(fd: int, part: bytes, offset: int) -> int:  # the kernel's, with `room` free
        nonlocal taken
        if not os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path)):
            return real_pwrite(fd, part, offset)
        if taken >= room:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = real_pwrite(fd, memoryview(part)[: room - taken], offset)
        taken += written
        return written

    monkeypatch.setattr(os, "pwrite", disk)
    writer = store.begin(digest_of(data), len(data))
    with pytest.raises(StoreFull):
        for start in range(0, len(data), 512 << 10):
            await writer.write(data[start : start + (512 << 10)])
        await writer.flush()
    assert 0 < writer.written <= room
    assert await writer.read(0, writer.written) == data[: writer.written]
    writer.abort()
    store.close()


async def test_room_is_made_by_evicting_unused_content_or_refused() -> None:
    store = ContentStore.memory(capacity=DISK_RESERVE + 12 * MiB)
    troubles: list[str] = []
    store.on_trouble = troubles.append
    old, used, pinned = (bytes([i]) * (4 * MiB) for i in range(3))
    for data in (old, used, pinned):
        await store.put(digest_of(data), data)
    store.pin(digest_of(pinned), "seed:archive")
    with store.using(digest_of(used)):
        assert not store.room_for(9 * MiB)  # only `old` could go: not enough, so it stays
        assert store.stat(digest_of(old)) is not None
        assert store.room_for(4 * MiB)  # `old` goes
        assert store.stat(digest_of(old)) is None
        writer = store.begin(digest_of(old), len(old))  # what it will write counts as taken
        assert not store.room_for(1)
        writer.abort()
        assert store.room_for(1)
    assert store.stat(digest_of(used)) is not None and store.stat(digest_of(pinned)) is not None
    assert troubles == ["disk_full", "disk_full"]
    store.close()


async def test_failing_metadata_is_a_cache_miss_and_a_blob_it_cannot_record_is_not_stored() -> None:
    store = ContentStore.memory()
    troubles: list[str] = []
    store.on_trouble = troubles.append
    data = b"recorded before"
    await store.put(digest_of(data), data)
    failing_metadata(store)
    store.set_tag("docker.io", "library/nginx", "1", digest_of(data), "application/x")
    assert store.tag("docker.io", "library/nginx", "1") is None
    assert await read(store, digest_of(data)) == data  # its access time is not recorded
    big = b"n" * (5 * MiB)
    with pytest.raises(StoreFull):
        await store.put(digest_of(big), big)
    assert store.stat(digest_of(big)) is None
    assert store._backend.digests() == {digest_of(data)}  # type: ignore[attr-defined]
    assert set(troubles) == {"metadata"}
    store.close()


def test_a_large_metadata_database_is_said_to_be_checked_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Checking a large store's database at start takes seconds: the node says so, rather than
    seem to hang; a small one is checked without a word."""
    path = tmp_path / "metadata.sqlite"
    open_metadata(path).close()
    caplog.set_level(logging.INFO, logger="node.store.metadata")
    open_metadata(path).close()
    assert not caplog.records
    monkeypatch.setattr(metadata, "CHECK_NOTICE_BYTES", path.stat().st_size)
    open_metadata(path).close()
    assert [r.getMessage() for r in caplog.records] == [
        "checking the store's metadata",
        "the store's metadata is whole",
    ]
