"""A swarmed chunk that makes no progress is told its sources again (the tracker places it anew
and the node connects to every source named), without starting over; one that makes progress is
left alone. Fakes stand in for the tracker client and the libtorrent session."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from node.errors import ContentInvalid
from node.metrics import NodeMetrics
from node.p2p import metainfo
from node.p2p import pull as pull_module
from node.p2p.metainfo import ChunkTorrent, PieceHashes
from node.p2p.pull import PullConfig, SwarmPull
from node.p2p.session import PeerAddress
from node.store.chunking import MiB, chunk_name
from tracker.client import ChunkPlacement, Directive, Peer, Placement
from tracker.errors import TrackerError

DIGEST = "sha256:" + "c" * 64
SIZE = 4 * MiB  # one chunk


class FakeTracker:
    """Places the chunk with one source at first, and with a second one from then on."""

    def __init__(self, torrent: ChunkTorrent) -> None:
        self.torrent = torrent
        self.sources = ["10.0.0.2:6881"]
        self.locates = 0
        self.failed: list[list[int]] = []  # the chunks each Locate said failed their hash

    async def locate(self, *args: object, **kwargs: object) -> Placement:
        self.locates += 1
        self.failed.append(list(kwargs.get("failed", ())))  # type: ignore[call-overload]
        if self.locates == 2:
            self.sources.append("10.0.0.3:6881")
        peers = tuple(Peer(f"node{i}", "", address, "") for i, address in enumerate(self.sources))
        placed = ChunkPlacement(
            0, Directive.SWARM, self.torrent.metainfo, peers, frozenset(), None, 0.0
        )
        return Placement(DIGEST, 1, (placed,))

    @asynccontextmanager
    async def watch(self, *args: object) -> AsyncIterator[AsyncIterator[Placement]]:
        async def nothing() -> AsyncIterator[Placement]:
            await asyncio.Event().wait()
            yield  # type: ignore[misc]

        yield nothing()

    async def announce(self, *args: object, **kwargs: object) -> None:
        pass


class FakeSession:
    """Adds torrents that never finish; `progress` is what the test sets."""

    def __init__(self) -> None:
        self.connected: list[PeerAddress] = []
        self.bytes = 0
        self.failed_pieces = 0

    async def add(
        self, torrent: ChunkTorrent, save_path: Path, *, peers: list[PeerAddress], **_: object
    ) -> None:
        self.connected.extend(peers)

    def connect(self, infohash: str, peers: list[PeerAddress]) -> None:
        self.connected.extend(peers)

    def progress(self, infohash: str) -> int:
        return self.bytes

    def hash_failures(self, infohash: str) -> int:
        return self.failed_pieces

    async def finished(self, infohash: str) -> None:
        await asyncio.Event().wait()

    def remove(self, infohash: str) -> None:
        pass


class Writer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def adopt(self, length: int) -> None:
        pass


async def swarm_for(
    seconds: float,
    tmp_path: Path,
    session: FakeSession,
    tracker: FakeTracker,
    grow: bool,
    fail_at: float | None = None,
) -> None:
    """Run a pull for `seconds`, the torrent's progress growing each tick if `grow`; a piece
    fails its hash `fail_at` seconds before the end."""

    async def nothing(*args: object) -> None:
        pass

    pull = SwarmPull(
        DIGEST,
        SIZE,
        upstream=None,  # type: ignore[arg-type]  # never reached: the chunk is swarmed
        session=session,  # type: ignore[arg-type]
        client=tracker,  # type: ignore[arg-type]
        node_id="node9",
        config=PullConfig(),
        on_complete=nothing,
        on_corrupt=lambda digest: None,
        metrics=NodeMetrics(),
    )
    task = asyncio.create_task(pull.run(lambda size: Writer(tmp_path)))  # type: ignore[arg-type, return-value]
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        if grow:
            session.bytes += 1024
        if fail_at is not None and asyncio.get_running_loop().time() >= deadline - fail_at:
            session.failed_pieces, fail_at = session.failed_pieces + 1, None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.fixture(autouse=True)
def quick_nudge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pull_module, "NUDGE_SECONDS", 0.5)


@pytest.fixture
def tracker(tmp_path: Path) -> FakeTracker:
    path = tmp_path / chunk_name(DIGEST, 0)
    path.write_bytes(b"x" * SIZE)
    return FakeTracker(metainfo.from_file(path, DIGEST, SIZE, 0))


async def test_a_quiet_swarm_is_told_its_sources_again(
    tmp_path: Path, tracker: FakeTracker
) -> None:
    session = FakeSession()
    await swarm_for(2.5, tmp_path, session, tracker, grow=False)
    assert tracker.locates >= 2
    assert ("10.0.0.3", 6881) in session.connected


async def test_a_swarm_that_makes_progress_is_left_alone(
    tmp_path: Path, tracker: FakeTracker
) -> None:
    session = FakeSession()
    await swarm_for(2.5, tmp_path, session, tracker, grow=True)
    assert tracker.locates == 1
    assert session.connected == [("10.0.0.2", 6881)]


async def test_pieces_that_failed_their_hash_are_told_to_the_tracker(
    tmp_path: Path, tracker: FakeTracker
) -> None:
    """A piece of the swarmed chunk fails its hash while the swarm makes progress: a Locate,
    at once rather than at a stall, says so (the tracker asks the holders to check their
    copies), and only that one."""
    session = FakeSession()
    await swarm_for(3.5, tmp_path, session, tracker, grow=True, fail_at=2.5)
    assert tracker.failed[0] == []
    assert [0] in tracker.failed
    assert tracker.failed.count([0]) == 1


# -- without a tracker: chunks straight from upstream, a few at a time


class DownTracker:
    """A tracker that cannot be reached: the pull fetches every chunk from upstream."""

    @asynccontextmanager
    async def watch(self, *args: object) -> AsyncIterator[AsyncIterator[Placement]]:
        raise TrackerError("tracker down")
        yield  # type: ignore[unreachable]


class RangeUpstream:
    """Serves a blob's byte ranges, slowly, counting the ranges it serves at once; `size` is the
    blob's size as it says it (a manifest may have declared another)."""

    def __init__(self, data: bytes, size: int | None = None) -> None:
        self.data = data
        self.size = len(data) if size is None else size
        self.open = 0
        self.most_open = 0
        self.requests = 0

    @asynccontextmanager
    async def __call__(self, start: int, end: int | None) -> AsyncIterator[RangeStream]:
        self.requests += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await asyncio.sleep(0.01)
            yield RangeStream(self.size, start, self.data[start:end])
        finally:
            self.open -= 1


class RangeStream:
    def __init__(self, size: int, start: int, data: bytes) -> None:
        self.size, self.start, self.received = size, start, 0
        self._data = data

    async def blocks(self) -> AsyncIterator[list[bytes]]:
        self.received = len(self._data)
        yield [self._data]


class SeedingSession(FakeSession):
    async def add(self, torrent: ChunkTorrent, save_path: Path, **_: object) -> None:
        pass


class FileWriter(Writer):
    """Counts the bytes handed to the store writer, in order."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.adopted = 0

    async def adopt(self, length: int) -> None:
        self.adopted += length


def _direct_pull(upstream: RangeUpstream, size: int) -> SwarmPull:
    async def nothing(*args: object) -> None:
        pass

    return SwarmPull(
        DIGEST,
        size,
        upstream=upstream,  # type: ignore[arg-type]
        session=SeedingSession(),  # type: ignore[arg-type]
        client=DownTracker(),  # type: ignore[arg-type]
        node_id="node9",
        # The tracker is down from the start: a second of silence sends the pull upstream.
        config=PullConfig(fallback_parallel=2, stall_timeout=1.0),
        on_complete=nothing,
        on_corrupt=lambda digest: None,
        metrics=NodeMetrics(),
    )


async def test_without_a_tracker_chunks_come_from_upstream_a_few_at_a_time(tmp_path: Path) -> None:
    data = bytes(range(256)) * (40 * 4 * MiB // 256)  # 40 chunks
    upstream = RangeUpstream(data)
    writer = FileWriter(tmp_path)
    pull = _direct_pull(upstream, len(data))
    await pull.run(lambda size: writer)  # type: ignore[arg-type, return-value]
    assert writer.adopted == len(data)
    assert upstream.requests == 40
    assert upstream.most_open == 2


async def test_a_size_other_than_the_declared_one_fails_the_pull_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Both chunks in flight meet the wrong size; the failure is logged once."""
    caplog.set_level(logging.INFO, logger="node.p2p.pull")
    data = b"x" * (6 * MiB)
    upstream = RangeUpstream(data)
    pull = _direct_pull(upstream, 40 * 4 * MiB)  # a manifest said 160 MiB
    with pytest.raises(ContentInvalid, match="not the size its manifest declares"):
        await pull.run(lambda size: FileWriter(tmp_path))  # type: ignore[arg-type, return-value]
    await asyncio.sleep(0.1)  # what was in flight ends; nothing new starts
    assert upstream.requests <= 3
    assert upstream.open == 0
    assert upstream.most_open == 2
    assert [r.getMessage() for r in caplog.records].count("chunk failed") == 1


def test_a_range_block_the_disk_takes_only_part_of_is_written_whole_or_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk's range from upstream goes into its file block by block; a disk that takes part
    of a block (a short write) has the rest written after it, or refuses it with its error:
    never a chunk counted whole with a hole in its file."""
    block = [b"a" * 300_000, b"b" * 300_000]
    real_pwrite = os.pwrite
    full = [True]  # after the first 400,000 bytes of a write

    def pwritev(fd: int, parts: list[bytes], offset: int) -> int:  # the disk takes what fits
        return real_pwrite(fd, b"".join(parts)[:400_000], offset)

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwritev", pwritev)
    monkeypatch.setattr(os, "pwrite", pwrite)
    path = tmp_path / "chunk"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError) as refused:
            pull_module._store(fd, block, 0, PieceHashes(1 << 20))
        assert refused.value.errno == errno.ENOSPC
        full[0] = False  # room for the rest, after the short write
        pull_module._store(fd, block, 0, PieceHashes(1 << 20))
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(block)
