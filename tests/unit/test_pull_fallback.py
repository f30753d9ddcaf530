"""A chunk's way to upstream when the swarm cannot bring it, on virtual time: a fetch that brings
bytes is never cancelled or started again, however slowly they come; a transfer that breaks
resumes from the first byte missing; a chunk the tracker says to wait for is not fetched behind
its back; a lease renewal reports every byte read. Fakes stand in for the tracker client, the
libtorrent session and the upstream registry."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from node.errors import UpstreamUnavailable
from node.metrics import NodeMetrics
from node.p2p import metainfo
from node.p2p.metainfo import ChunkTorrent
from node.p2p.pull import PullConfig, SwarmPull
from node.p2p.swarm import Swarm
from node.store.chunking import MiB, chunk_name
from tests.support.virtualclock import on_virtual_time
from tracker.client import ChunkPlacement, Directive, HeldBlob, Peer, Placement
from tracker.errors import MetainfoUnconfirmed, NodeUnknown, TrackerError, TrackerUnavailable

DIGEST = "sha256:" + "d" * 64
SIZE = 4 * MiB  # one chunk
DATA = bytes(range(256)) * (SIZE // 256)
TWO_CHUNKS = DATA + DATA[::-1]
STALL = 10.0  # the default stall timeout: a swarm quiet for 2 x STALL goes upstream
SLOW = 40 << 10  # bytes a second: a 1 MiB block every 26 s, a chunk in 105 s
DEADLINE = 1200.0  # virtual seconds a pull may take here before the test calls it hung


@dataclass
class SlowStream:
    """What `BlobStream` does on a slow link: bytes come `rate` a second, are yielded in blocks
    of `block`, and what had come when the connection breaks is yielded before the error."""

    size: int
    start: int
    end: int
    rate: int
    block: int = 1 << 20
    break_after: int | None = None  # bytes into this transfer
    received: int = 0
    data: bytes = DATA

    async def blocks(self) -> AsyncIterator[list[bytes]]:
        position, pending = self.start, 0
        while position + pending < self.end:
            await asyncio.sleep(1.0)
            step = min(self.rate, self.end - position - pending)
            broke = self.break_after is not None and self.received + step >= self.break_after
            if broke:
                assert self.break_after is not None
                step = self.break_after - self.received
            self.received += step
            pending += step
            if broke or pending >= self.block or position + pending == self.end:
                yield [self.data[position : position + pending]]
                position, pending = position + pending, 0
            if broke:
                raise UpstreamUnavailable("connection reset by peer")


@dataclass
class SlowUpstream:
    rate: int = SLOW
    breaks: list[int] = field(default_factory=list)  # one per transfer, in order
    opened: list[int] = field(default_factory=list)  # the first byte each transfer asked for
    data: bytes = DATA

    @asynccontextmanager
    async def __call__(self, start: int, end: int | None) -> AsyncIterator[SlowStream]:
        self.opened.append(start)
        size = len(self.data)
        stop = size if end is None else end
        breaks = self.breaks.pop(0) if self.breaks else None
        yield SlowStream(size, start, stop, self.rate, break_after=breaks, data=self.data)


class Tracker:
    """Places the chunks as the test says, on Locate and on the watch stream."""

    def __init__(self, torrent: ChunkTorrent, directive: Directive, chunk_count: int = 1) -> None:
        self.torrent = torrent
        self.directives = dict.fromkeys(range(chunk_count), directive)
        self.events: asyncio.Queue[Placement | TrackerError] = asyncio.Queue()
        self.renewals: list[tuple[int, bool]] = []
        self.released: list[int] = []
        self.published: list[int] = []
        self.refuse_publish = False  # as after the tracker's state started afresh
        self.refusal: TrackerError | None = None  # what every Locate and Watch raises, if set
        self.announced: list[HeldBlob] = []
        self.published_metainfo = True  # False: it names a chunk's sources, not its metainfo
        self.located = 0

    def placement(self) -> Placement:
        placed = []
        for chunk, directive in self.directives.items():
            swarm = directive is Directive.SWARM
            peers = (Peer("holder", "", "10.0.0.2:6881", ""),) if swarm else ()
            meta = self.torrent.metainfo if swarm and self.published_metainfo else None
            placed.append(ChunkPlacement(chunk, directive, meta, peers, frozenset(), None, 0.0))
        return Placement(DIGEST, len(placed), tuple(placed))

    def tell(self, directive: Directive, chunk: int = 0) -> None:
        self.directives[chunk] = directive
        self.events.put_nowait(self.placement())

    async def locate(self, *args: object, **kwargs: object) -> Placement:
        if self.refusal is not None:
            raise self.refusal
        self.located += 1
        return self.placement()

    def fail(self, error: TrackerError) -> None:
        """The tracker goes away: the watch stream breaks, and every call fails until `back`."""
        self.refusal = error
        self.events.put_nowait(error)

    def back(self) -> None:
        self.refusal = None

    @asynccontextmanager
    async def watch(self, *args: object) -> AsyncIterator[AsyncIterator[Placement]]:
        if self.refusal is not None:
            raise self.refusal

        async def events() -> AsyncIterator[Placement]:
            while True:
                event = await self.events.get()
                if isinstance(event, TrackerError):
                    raise event
                yield event

        yield events()

    async def renew_lease(
        self, node_id: str, digest: str, chunk: int, progress: int, fetched: bool = False
    ) -> bool:
        self.renewals.append((progress, fetched))
        return True

    async def release_lease(self, node_id: str, digest: str, chunk: int, reason: str = "") -> None:
        self.released.append(chunk)

    async def publish(self, *args: object) -> None:
        if self.refuse_publish:
            raise MetainfoUnconfirmed("taken once a second node publishes the same")
        self.published.append(int(args[4]))  # type: ignore[call-overload]

    async def announce(self, node_id: str, blobs: list[HeldBlob]) -> None:
        self.announced.extend(blobs)

    async def withdraw(self, *args: object, **kwargs: object) -> None:
        pass


FORGOTTEN = NodeUnknown("unknown node 'node9': join first")  # it was frozen past its TTL


@dataclass
class Membership:
    """This node's membership: its client and id, as the swarm sees it; and, as a pull sees it,
    it joins again when asked (after a heartbeat's round trip), unless the tracker is gone."""

    tracker: Tracker
    can_join: bool = True
    joins: int = 1
    asked: int = 0
    node_id: str = "node9"

    @property
    def client(self) -> Tracker:
        return self.tracker

    async def rejoined(self, since: int) -> bool:
        self.asked += 1
        await asyncio.sleep(0.5)
        if self.can_join:
            self.joins += 1
            self.tracker.refusal = None
        return self.joins > since


class Session:
    """A swarm that never brings a byte; seeds are added and done at once."""

    def __init__(self) -> None:
        self.seeded: list[str] = []
        self.added: list[str] = []  # torrents to download

    async def add(self, torrent: ChunkTorrent, save_path: Path, *, seed: bool, **_: object) -> None:
        (self.seeded if seed else self.added).append(torrent.infohash)

    def connect(self, *args: object) -> None:
        pass

    def progress(self, infohash: str) -> int:
        return 0

    def hash_failures(self, infohash: str) -> int:
        return 0

    async def finished(self, infohash: str) -> None:
        await asyncio.Event().wait()

    def remove(self, infohash: str) -> None:
        pass


class Writer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.adopted = 0

    async def adopt(self, length: int) -> None:
        self.adopted += length


@dataclass
class Pull:
    tracker: Tracker
    upstream: SlowUpstream
    metrics: NodeMetrics
    directory: Path
    task: asyncio.Task[object]
    session: Session

    async def done(self) -> None:
        async with asyncio.timeout(DEADLINE):
            await self.task
        assert (self.directory / chunk_name(DIGEST, 0)).read_bytes() == DATA

    def fallbacks(self, reason: str) -> float:
        return self.metrics.fallbacks.labels(reason)._value.get()


@pytest.fixture
def torrent(tmp_path: Path) -> ChunkTorrent:
    source = tmp_path / "source"
    source.mkdir()
    (source / chunk_name(DIGEST, 0)).write_bytes(DATA)
    return metainfo.from_file(source / chunk_name(DIGEST, 0), DIGEST, SIZE, 0)


def start(
    tmp_path: Path,
    tracker: Tracker,
    upstream: SlowUpstream,
    rejoining: object = None,
    size: int = SIZE,
) -> Pull:
    directory = tmp_path / "pull"
    directory.mkdir()
    metrics = NodeMetrics()

    async def nothing(*args: object) -> None:
        pass

    session = Session()
    pull = SwarmPull(
        DIGEST,
        size,
        upstream,
        session,  # type: ignore[arg-type]
        tracker,  # type: ignore[arg-type]
        "node9",
        PullConfig(stall_timeout=STALL),
        on_complete=nothing,
        on_corrupt=lambda digest: None,
        metrics=metrics,
        rejoining=rejoining,  # type: ignore[arg-type]
    )
    task = asyncio.create_task(pull.run(lambda size: Writer(directory)))  # type: ignore[arg-type, return-value]
    return Pull(tracker, upstream, metrics, directory, task, session)  # type: ignore[arg-type]


@on_virtual_time
async def test_a_slow_fallback_fetch_runs_to_its_end(tmp_path: Path, torrent: ChunkTorrent) -> None:
    """The swarm brings nothing, so the chunk goes upstream once; that transfer takes minutes
    and yields a block every 26 s, and is never cancelled or started again."""
    pull = start(tmp_path, Tracker(torrent, Directive.SWARM), SlowUpstream())
    await pull.done()
    assert pull.upstream.opened == [0]
    assert pull.fallbacks("stall") == 1
    assert pull.tracker.published == [0]


@on_virtual_time
async def test_a_chunk_queued_for_an_upstream_slot_is_not_fetched_behind_the_trackers_back(
    tmp_path: Path, torrent: ChunkTorrent
) -> None:
    """On a slow upstream the cluster's few upstream slots are busy for minutes: a chunk told to
    WAIT waits, and is fetched once, by its lease holder."""
    pull = start(tmp_path, Tracker(torrent, Directive.WAIT), SlowUpstream())
    await asyncio.sleep(10 * STALL)
    assert pull.upstream.opened == []
    pull.tracker.tell(Directive.FETCH)
    await pull.done()
    assert pull.upstream.opened == [0]
    assert pull.fallbacks("stall") == 0
    assert pull.tracker.renewals[-1][1]  # reported fetched: the slot is free for the next chunk


@on_virtual_time
async def test_a_lease_granted_to_a_fallback_fetch_under_way_takes_it_over(
    tmp_path: Path, torrent: ChunkTorrent
) -> None:
    pull = start(tmp_path, Tracker(torrent, Directive.SWARM), SlowUpstream())
    await asyncio.sleep(2 * STALL + 30)  # the stalled swarm went upstream a while ago
    assert pull.upstream.opened == [0]
    pull.tracker.tell(Directive.FETCH)
    await pull.done()
    assert pull.upstream.opened == [0]
    assert pull.tracker.renewals and pull.tracker.released == []


@on_virtual_time
async def test_a_broken_transfer_resumes_from_the_first_byte_missing(
    tmp_path: Path, torrent: ChunkTorrent
) -> None:
    broken_at = 1 * MiB + 300_000  # a block and a bit into the transfer
    upstream = SlowUpstream(rate=256 << 10, breaks=[broken_at])
    pull = start(tmp_path, Tracker(torrent, Directive.FETCH), upstream)
    await pull.done()
    assert upstream.opened == [0, broken_at]
    assert pull.metrics.upstream_resumes._value.get() == 1


@on_virtual_time
async def test_a_transfer_that_keeps_breaking_without_a_byte_fails(
    tmp_path: Path, torrent: ChunkTorrent
) -> None:
    upstream = SlowUpstream(breaks=[0] * 50)
    pull = start(tmp_path, Tracker(torrent, Directive.FETCH), upstream)
    with pytest.raises(UpstreamUnavailable):
        async with asyncio.timeout(DEADLINE):
            await pull.task
    assert len(upstream.opened) <= 2 * 5  # a few resumes, with backoff, per lease: bounded


@on_virtual_time
async def test_a_lease_is_renewed_with_every_byte_read(
    tmp_path: Path, torrent: ChunkTorrent
) -> None:
    """The tracker moves a lease on once its progress stops growing: between two 1 MiB blocks of
    a slow transfer, the bytes read must still show."""
    pull = start(tmp_path, Tracker(torrent, Directive.FETCH), SlowUpstream())
    await pull.done()
    progress = [p for p, fetched in pull.tracker.renewals if not fetched]
    assert len(progress) > 50
    assert all(b > a for a, b in itertools.pairwise(progress))


async def leased_at_last(pull: Pull) -> None:
    """Nothing was fetched behind the tracker's back: leased the chunk at last, the pull fetches
    it once, and never fell back for want of a tracker."""
    assert pull.upstream.opened == []
    pull.tracker.tell(Directive.FETCH)
    await pull.done()
    assert pull.upstream.opened == [0]
    assert pull.fallbacks("tracker") == 0


@on_virtual_time
async def test_a_pull_whose_tracker_forgot_the_node_goes_on_once_it_joined_again(
    tmp_path: Path, torrent: ChunkTorrent
) -> None:
    """A node frozen past its TTL finds itself forgotten: it joins again and the pull goes on
    with the tracker, not to upstream behind the cluster's back (the rest may be in the swarm)."""
    tracker = Tracker(torrent, Directive.WAIT)
    tracker.refusal = FORGOTTEN
    membership = Membership(tracker)
    pull = start(tmp_path, tracker, SlowUpstream(), rejoining=membership)
    await asyncio.sleep(STALL)
    assert membership.asked == 1
    await leased_at_last(pull)


@on_virtual_time
async def test_a_pull_whose_node_cannot_join_again_fetches_the_rest_from_upstream(
    tmp_path: Path, torrent: ChunkTorrent
) -> None:
    tracker = Tracker(torrent, Directive.WAIT)
    tracker.refusal = FORGOTTEN
    membership = Membership(tracker, can_join=False)
    pull = start(tmp_path, tracker, SlowUpstream(), rejoining=membership)
    await pull.done()
    assert membership.asked >= 1
    assert pull.upstream.opened == [0]
    assert pull.fallbacks("tracker") == 1


@on_virtual_time
async def test_a_pull_waits_for_a_tracker_that_comes_back_within_the_stall_timeout(
    tmp_path: Path, torrent: ChunkTorrent
) -> None:
    """The tracker restarts while the chunk waits for another node's fetch: the pull tries it
    again until it answers, and the chunk still comes from the lease holder, not from upstream
    behind the cluster's back (every node fetching the rest would cost the image again)."""
    tracker = Tracker(torrent, Directive.WAIT)
    pull = start(tmp_path, tracker, SlowUpstream())
    await asyncio.sleep(1)
    tracker.fail(TrackerUnavailable("no tracker replica answers"))
    await asyncio.sleep(0.8 * STALL)
    tracker.back()
    await asyncio.sleep(5 * STALL)
    await leased_at_last(pull)


@on_virtual_time
async def test_a_tracker_silent_for_the_stall_timeout_sends_the_rest_upstream(
    tmp_path: Path, torrent: ChunkTorrent
) -> None:
    """Waiting for the tracker is bounded: one silence of `stall_timeout`, counted from its
    start, then the rest comes from upstream; a tracker that answered in between starts the
    count again."""
    tracker = Tracker(torrent, Directive.WAIT)
    pull = start(tmp_path, tracker, SlowUpstream())
    await asyncio.sleep(1)
    tracker.fail(TrackerUnavailable("no tracker replica answers"))
    await asyncio.sleep(0.8 * STALL)
    tracker.back()
    await asyncio.sleep(1)
    tracker.fail(TrackerUnavailable("no tracker replica answers"))
    await asyncio.sleep(0.8 * STALL)
    assert pull.upstream.opened == []
    await asyncio.sleep(0.4 * STALL)
    assert pull.upstream.opened == [0]
    await pull.done()
    assert pull.fallbacks("tracker") == 1


@on_virtual_time
async def test_a_chunk_left_to_wait_for_when_the_tracker_fails_comes_from_upstream(
    tmp_path: Path, torrent: ChunkTorrent
) -> None:
    """The chunk was being swarmed when the tracker said to wait for it (its sources were lost,
    another node fetches it), then the tracker failed: the rest comes from upstream, and this
    chunk too once its quiet swarm is stopped, with no tracker left to move it on."""
    tracker = Tracker(torrent, Directive.SWARM)
    pull = start(tmp_path, tracker, SlowUpstream())
    await asyncio.sleep(1)
    tracker.tell(Directive.WAIT)
    tracker.refusal = TrackerUnavailable("no tracker replica answers")
    await pull.done()
    assert pull.upstream.opened == [0]
    assert pull.fallbacks("tracker") == 1


@on_virtual_time
async def test_a_chunk_whose_sources_have_not_published_its_metainfo_is_asked_for_again(
    tmp_path: Path, torrent: ChunkTorrent
) -> None:
    """After the tracker's state started afresh it may know a chunk's holders before their
    metainfo: the pull asks for the chunk again every few seconds, as for a quiet swarm (each
    ask lets the tracker ask the holders to publish), and swarms it once the metainfo comes."""
    tracker = Tracker(torrent, Directive.SWARM)
    tracker.published_metainfo = False
    pull = start(tmp_path, tracker, SlowUpstream())
    await asyncio.sleep(STALL)
    assert tracker.located >= 4  # every NUDGE_SECONDS, not once a stall timeout
    assert pull.upstream.opened == []
    tracker.published_metainfo = True
    tracker.tell(Directive.SWARM)
    await asyncio.sleep(1)
    assert pull.session.added == [torrent.infohash]
    pull.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pull.task


@on_virtual_time
async def test_a_chunk_fetched_without_its_lease_is_announced_held(
    tmp_path: Path, torrent: ChunkTorrent
) -> None:
    """The tracker's state started afresh while the chunk was fetched: its metainfo waits for a
    second witness, but the tracker hears at once that this node holds it, so it neither leases
    it out again nor lets the nodes that need it wait on a fetch nobody makes."""
    tracker = Tracker(torrent, Directive.FETCH)
    tracker.refuse_publish = True
    pull = start(tmp_path, tracker, SlowUpstream(rate=SIZE))
    await pull.done()
    await asyncio.sleep(1)  # the announcement goes out
    assert [(b.digest, b.chunks) for b in tracker.announced] == [(DIGEST, (0,))]


@on_virtual_time
async def test_a_lease_on_a_chunk_already_here_is_answered_with_holding_it(
    tmp_path: Path, torrent: ChunkTorrent
) -> None:
    """The tracker lost track of the node's copy of a chunk and leases it to the node again: the
    node says it holds the chunk, which ends the lease, rather than sit on a lease it never
    uses while the nodes that need the chunk wait for it."""
    tracker = Tracker(torrent, Directive.FETCH, chunk_count=2)
    tracker.directives[1] = Directive.WAIT
    upstream = SlowUpstream(rate=SIZE, data=TWO_CHUNKS)
    pull = start(tmp_path, tracker, upstream, size=len(TWO_CHUNKS))
    await asyncio.sleep(STALL)
    assert tracker.published == [0]
    tracker.tell(Directive.FETCH, chunk=0)
    await asyncio.sleep(1)
    assert {(b.digest, b.chunks) for b in tracker.announced} == {(DIGEST, (0,))}
    tracker.tell(Directive.FETCH, chunk=1)
    await pull.done()
    assert upstream.opened == [0, SIZE]


class EmptyStore:
    def blobs(self) -> list[object]:
        return []


@on_virtual_time
async def test_a_node_joining_again_names_what_its_pulls_hold_so_far(
    tmp_path: Path, torrent: ChunkTorrent
) -> None:
    """Redis came back empty mid-pull: the inventory the node announces as it joins again names
    the chunks its pulls hold already, not only the blobs it stored, or the tracker believes
    nobody holds them (and may make the node relay a chunk it has, which it never swarms)."""
    tracker = Tracker(torrent, Directive.FETCH, chunk_count=2)
    tracker.directives[1] = Directive.WAIT
    swarm = Swarm(EmptyStore(), Session(), NodeMetrics(), PullConfig(stall_timeout=STALL))  # type: ignore[arg-type]
    swarm.attach(Membership(tracker))  # type: ignore[arg-type]
    directory = tmp_path / "pull"
    directory.mkdir()
    pull = swarm.pull(DIGEST, len(TWO_CHUNKS), SlowUpstream(rate=SIZE, data=TWO_CHUNKS))
    task = asyncio.create_task(pull.run(lambda size: Writer(directory)))  # type: ignore[arg-type, return-value]
    await asyncio.sleep(STALL)
    inventory = await swarm.inventory()
    assert inventory.blobs == (HeldBlob(DIGEST, len(TWO_CHUNKS), 2, (0,), ()),)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await pull.failed(UpstreamUnavailable("download cancelled"))
    assert (await swarm.inventory()).blobs == ()
