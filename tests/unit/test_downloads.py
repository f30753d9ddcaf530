"""Downloads against an in-memory source: readers follow the writer, the tail waits for the
digest check, broken transfers resume where they stopped."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from node.downloads import HOLDBACK, Downloads, UpstreamFill
from node.errors import ContentInvalid, UpstreamUnavailable
from node.store.contentstore import ContentStore
from node.store.memory import MemoryPending


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class MemoryStream:
    size: int
    start: int
    data: bytes
    block: int
    gate: asyncio.Event
    break_at: int | None = None
    hold_at: int | None = None

    async def blocks(self) -> AsyncIterator[list[bytes]]:
        hold_at = self.size - self.block if self.hold_at is None else self.hold_at
        for offset in range(self.start, self.size, self.block):
            if self.break_at is not None and offset >= self.break_at:
                raise UpstreamUnavailable("connection reset")
            if offset >= hold_at:
                await self.gate.wait()  # held by the test (by default, the last block)
            end = offset + self.block
            yield [self.data[offset : (offset + end) // 2], self.data[(offset + end) // 2 : end]]
            await asyncio.sleep(0)


@dataclass
class MemorySource:
    """What an upstream would send: `data` (possibly wrong), honouring Range unless told not to."""

    data: bytes
    block: int = 64 << 10
    honour_range: bool = True
    breaks: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    hold_at: int | None = None  # where streams wait for the gate; None: at the last block

    @asynccontextmanager
    async def __call__(self, offset: int, end: int | None) -> AsyncIterator[MemoryStream]:
        self.offsets.append(offset)
        start = offset if self.honour_range else 0
        break_at = self.breaks.pop(0) if self.breaks else None
        yield MemoryStream(
            len(self.data), start, self.data, self.block, self.gate, break_at, self.hold_at
        )


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([block async for block in stream])


@pytest.fixture
def store() -> ContentStore:
    return ContentStore.memory()


async def test_the_tail_waits_for_verification(store: ContentStore) -> None:
    wrong = b"w" * (HOLDBACK * 4)
    source = MemorySource(wrong, block=HOLDBACK // 4)
    download = Downloads(store).start(
        digest_of(b"r" * len(wrong)), UpstreamFill(digest_of(b"r" * len(wrong)), source)
    )
    received = bytearray()

    async def reader() -> None:
        async for block in download.read(0, len(wrong)):
            received.extend(block)

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.2)  # all but the last block has been written
    assert len(received) == len(wrong) - HOLDBACK
    source.gate.set()
    with pytest.raises(ContentInvalid):
        await task
    assert len(received) < len(wrong)
    assert store.stat(digest_of(b"r" * len(wrong))) is None


async def test_readers_get_every_byte_and_the_blob_is_stored(store: ContentStore) -> None:
    data = bytes(range(256)) * 4096
    source = MemorySource(data)
    source.gate.set()
    downloads = Downloads(store)
    download = downloads.start(digest_of(data), UpstreamFill(digest_of(data), source))
    bodies = await asyncio.gather(*(collect(download.read(0, len(data))) for _ in range(5)))
    assert all(body == data for body in bodies)
    assert await collect(download.read(1000, 2000)) == data[1000:2000]
    assert download.task is not None
    await download.task  # the readers may end before the blob is on disk
    assert store.stat(digest_of(data)) is not None
    assert downloads.get(digest_of(data)) is None


async def test_the_tail_is_released_once_verified_not_once_on_disk(
    store: ContentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Putting a blob on disk (fsync) can take a busy disk half a second: a client that already
    # has every verified byte but the last ones does not wait for it.
    on_disk = threading.Event()
    monkeypatch.setattr(MemoryPending, "sync", lambda self: on_disk.wait(10))
    data = bytes(range(256)) * 4096
    source = MemorySource(data)
    source.gate.set()
    download = Downloads(store).start(digest_of(data), UpstreamFill(digest_of(data), source))
    try:
        assert await asyncio.wait_for(collect(download.read(0, len(data))), 5) == data
        assert store.stat(digest_of(data)) is None  # still being put on disk
    finally:
        on_disk.set()
    await download.stored()
    assert store.stat(digest_of(data)) is not None


async def test_a_clean_stop_lets_a_verified_blob_go_into_place_and_cancels_the_rest(
    store: ContentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its client may have every byte already: a node stopped then keeps it, as it did when the
    last bytes waited for the disk. A download still bringing bytes in is cancelled."""
    on_disk = threading.Event()
    monkeypatch.setattr(MemoryPending, "sync", lambda self: on_disk.wait(10))
    downloads = Downloads(store)
    data = bytes(range(256)) * 4096
    source = MemorySource(data)
    source.gate.set()
    verified = downloads.start(digest_of(data), UpstreamFill(digest_of(data), source))
    assert await asyncio.wait_for(collect(verified.read(0, len(data))), 5) == data
    arriving = MemorySource(b"a" * 1_000_000)  # its gate stays shut: no byte comes
    cancelled = downloads.start(digest_of(b"a" * 1_000_000), UpstreamFill("-", arriving))
    closing = asyncio.ensure_future(downloads.close())
    await asyncio.sleep(0.1)
    assert cancelled.task is not None and cancelled.task.done()
    assert not closing.done()  # waiting for the verified blob to be on disk
    on_disk.set()
    await asyncio.wait_for(closing, 5)
    assert store.stat(digest_of(data)) is not None


@pytest.mark.parametrize("honour_range", [True, False])
async def test_broken_transfers_resume_from_the_last_byte(
    store: ContentStore, honour_range: bool
) -> None:
    data = bytes(range(256)) * 8192
    source = MemorySource(data, honour_range=honour_range, breaks=[500_000, 1_500_000])
    source.gate.set()
    download = Downloads(store).start(digest_of(data), UpstreamFill(digest_of(data), source))
    assert await collect(download.read(0, len(data))) == data
    assert source.offsets[0] == 0
    assert 0 < source.offsets[1] < source.offsets[2]


async def test_a_transfer_that_keeps_breaking_fails_cleanly(store: ContentStore) -> None:
    data = b"d" * 1_000_000
    source = MemorySource(data, breaks=[100_000] * 10)
    source.gate.set()
    download = Downloads(store).start(digest_of(data), UpstreamFill(digest_of(data), source))
    with pytest.raises(UpstreamUnavailable):
        await collect(download.read(0, len(data)))
    assert store.stat(digest_of(data)) is None
