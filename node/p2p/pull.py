"""One blob pulled chunk by chunk through the cluster (DESIGN section 2).

The tracker places each chunk: FETCH (this node holds the lease: fetch the chunk's byte range
from upstream, publish its metainfo, seed it), WAIT (another node is fetching it) or SWARM (peers
have it: download its torrent from them). A watch stream brings each newly published chunk, so a
cold blob spreads while it is still arriving from upstream. Chunks land in the blob's temporary
directory, in any order, by libtorrent or by our range fetches; they are handed to the store
writer in order, which hashes them, so clients are streamed each chunk as soon as it and all
before it are here.

A pull never fails while upstream works, and never asks it for the same bytes twice without
cause. A chunk the swarm brings no byte of for twice `stall_timeout` is fetched from upstream
directly, and so is every chunk left once the tracker has not answered for `stall_timeout`: a
tracker that restarts within that time finds the pull waiting for it, its chunks still
swarming, rather than every node fetching the rest of the image from upstream. A chunk the
tracker told us to WAIT for is not stalled: another node fetches it, or it waits its turn for an
upstream slot (on a slow upstream that queue is long), and the tracker moves leases on when
their holders stall. A range fetch, leased or not, is never cancelled for a lack of progress:
it runs to its end, and a transfer that breaks is resumed from the first byte missing
(`downloads.Resumes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from node.downloads import Begin, Resumes, Source, Stream, blocks_between
from node.errors import ContentInvalid, StoreFull, UpstreamUnavailable
from node.metrics import NodeMetrics
from node.p2p import metainfo
from node.p2p.announcer import Announcer
from node.p2p.metainfo import ChunkTorrent, MetainfoInvalid, PieceHashes
from node.p2p.session import PeerAddress, PeerSession, TorrentFailed
from node.store.chunking import chunk_count, chunk_name, chunk_range
from node.store.contentstore import BlobInfo, BlobWriter, unwritable
from node.store.disk import pwrite_all
from tracker import address
from tracker.client import ChunkPlacement, Directive, HeldBlob, Placement, TrackerClient
from tracker.errors import MetainfoUnconfirmed, NodeUnknown, TrackerError

log = logging.getLogger(__name__)

LEASE_RENEW_SECONDS = 1.0
# A swarmed chunk this long without progress asks the tracker for its sources again and connects
# to them: a peer may have turned us away (it had not added the chunk yet), and libtorrent only
# tries again later, or not at all once it stopped counting the peer as a candidate.
NUDGE_SECONDS = 2.0
TRACKER_RETRY_SECONDS = 0.5  # between two attempts to reach a tracker that stopped answering
MAX_SWARM_FAILURES = 3  # then the chunk waits for its stall timeout and goes upstream
MAX_UPSTREAM_FAILURES = 2  # each after the upstream client's own retries


@dataclass(frozen=True)
class PullConfig:
    stall_timeout: float = 10.0  # seconds without progress before a chunk goes to upstream
    max_leases: int = 2  # cold chunks this node fetches from upstream at once
    fallback_parallel: int = 2  # direct upstream fetches at once after a tracker failure


class Rejoining(Protocol):
    """This node's membership, as a pull sees it: when the tracker forgot the node (it was
    frozen or cut off past its TTL), the membership joins again and the pull goes on."""

    @property
    def joins(self) -> int: ...

    async def rejoined(self, since: int) -> bool:
        """Whether the node joined again after `since` joins, waiting a little for it."""
        ...


@dataclass
class _Chunk:
    index: int
    start: int
    end: int
    done: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    task: asyncio.Task[None] | None = None
    torrent: ChunkTorrent | None = None
    directive: Directive | None = None  # the tracker's latest word on it
    swarming: bool = False
    fetching: bool = False  # a range fetch from upstream is running
    leased: bool = False  # ... under this node's lease
    renewer: asyncio.Task[None] | None = None
    asked_at: float = 0.0  # when a stall last made us ask the tracker again
    nudged_at: float = 0.0  # when a quiet swarm last made us ask for its sources again
    started_at: float = 0.0  # when the current attempt to get it began
    swarm_failures: int = 0
    failed_pieces: int = 0  # of its torrent, that failed their hash: as last looked at
    suspect: bool = False  # pieces failed since the tracker last heard of it
    upstream_failures: int = 0
    bad_metainfo: bytes | None = None
    progress: int = 0  # most bytes any swarm attempt had: only more counts as progress
    fetched: int = 0  # bytes of the range written to the file by our fetches: where to resume
    hashes: PieceHashes | None = None  # of the bytes our fetches wrote, as they wrote them
    received: int = 0  # bytes of the range read off upstream connections, over all transfers
    stream: Stream | None = None  # the upstream transfer under way
    progress_at: float = field(default_factory=lambda: _now())  # when bytes last arrived
    excused_at: float = 0.0  # when the chunk was last waiting on the tracker (not stalled)
    unpublished: bool = False  # the tracker names its sources but has no metainfo of it yet

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def arrived(self) -> bool:
        """The chunk is here whole (its attempt neither failed nor was called off)."""
        done = self.done
        return done.done() and not done.cancelled() and done.exception() is None

    @property
    def busy(self) -> bool:
        return self.done.done() or (self.task is not None and not self.task.done())

    @property
    def waiting(self) -> bool:
        """The tracker told us to wait for it and nothing of ours is getting it."""
        return self.directive is Directive.WAIT and not self.busy

    def fetch_progress(self) -> int:
        """Bytes of the range received from upstream so far: grows with every read."""
        stream = self.stream
        return self.received + (stream.received if stream is not None else 0)


class SwarmPull:
    """A `downloads.Fill` that pulls through the swarm."""

    def __init__(
        self,
        digest: str,
        size: int,
        upstream: Source,
        session: PeerSession,
        client: TrackerClient,
        node_id: str,
        config: PullConfig,
        on_complete: Callable[[BlobInfo, list[ChunkTorrent]], Awaitable[None]],
        on_corrupt: Callable[[str], None],
        metrics: NodeMetrics,
        announcer: Announcer | None = None,
        rejoining: Rejoining | None = None,
    ) -> None:
        self.digest = digest
        self.size = size
        self._upstream = upstream
        self._session = session
        self._client = client
        self._node_id = node_id
        self._config = config
        self._on_complete = on_complete
        self._on_corrupt = on_corrupt  # (digest) the blob failed its digest check
        self._metrics = metrics
        self._announcer = announcer or Announcer(client, node_id)
        self._rejoining = rejoining
        self._count = chunk_count(size)
        self._chunks: list[_Chunk] = []
        self._directory: Path | None = None
        self._relocate = asyncio.Event()
        self._direct = False  # the tracker failed: every chunk left comes from upstream
        self._running = 0  # chunk tasks not done
        # What fails the whole pull: the blob is not what it was said to be, or the disk takes
        # no writes (full, or read-only).
        self._failure: ContentInvalid | StoreFull | None = None
        self._writer: BlobWriter | None = None
        self._ended = False
        self._over = False  # committed or failed: nothing of it is held here any more
        self._awaited: _Chunk | None = None  # the next chunk in order, which `run` awaits
        self._leases = 0
        self._answers = 0  # rounds of watch and Locate the tracker answered

    def source_at(self, offset: int) -> str:
        """Where the byte at `offset` came from: `peer` or `upstream`."""
        if not self._chunks:
            return "upstream"
        chunk = self._chunks[min(offset // max(1, self._chunks[0].length), self._count - 1)]
        return chunk.done.result() if chunk.arrived else "peer"

    async def run(self, begin: Begin) -> BlobWriter:
        writer = self._writer = begin(self.size)
        if writer.directory is None:
            raise RuntimeError("pulling through the swarm needs a store on disk")
        self._directory = writer.directory
        self._chunks = [_Chunk(i, *chunk_range(self.size, i)) for i in range(self._count)]
        try:
            async with asyncio.TaskGroup() as group:
                coordinator = group.create_task(self._coordinate())
                watchdog = group.create_task(self._watch_stalls())
                try:
                    for chunk in self._chunks:
                        await self._await_chunk(chunk)
                        await writer.adopt(chunk.length)
                finally:
                    self._ended = True  # no fetch starts from now on
                    coordinator.cancel()
                    watchdog.cancel()
        except BaseExceptionGroup as failure:
            # What failed the pull, as the error clients are told; the rest was cancelled.
            raise failure.exceptions[0] from None
        return writer

    # -- coordination with the tracker

    async def _coordinate(self) -> None:
        """Watch the blob and place its chunks with the tracker. A tracker that forgot this node
        (it restarted, or the node was frozen or cut off past its TTL) knows it again once the
        node joins again, and the pull goes on through the swarm: fetching the rest from
        upstream would fetch again what the cluster holds. A tracker that does not answer is
        tried again until it has been silent for `stall_timeout`; then the rest goes upstream."""
        lost_at: float | None = None  # when the tracker stopped answering this pull
        while True:
            joins = self._rejoining.joins if self._rejoining is not None else 0
            answers = self._answers
            try:
                await self._follow_tracker()
            except TrackerError as e:
                if lost_at is None or self._answers > answers:
                    lost_at = _now()  # a new silence: it answered since the last one
                    log.info(
                        "tracker failed mid-pull; the swarm goes on while it is tried again",
                        extra={"digest": self.digest, "error": e.message},
                    )
                if isinstance(e, NodeUnknown) and await self._joined_again(joins):
                    continue
                if _now() - lost_at >= self._config.stall_timeout:
                    self._tracker_failed(e)
                    return
                await asyncio.sleep(TRACKER_RETRY_SECONDS)

    async def _joined_again(self, joins: int) -> bool:
        if self._rejoining is None or not await self._rejoining.rejoined(joins):
            return False
        log.info(
            "the tracker forgot this node mid-pull; joined again, the pull goes on",
            extra={"digest": self.digest},
        )
        return True

    async def _follow_tracker(self) -> None:
        async with self._client.watch(self._node_id, self.digest, self.size, self._count) as events:
            watcher = asyncio.create_task(self._follow(events))
            try:
                while True:
                    self._relocate.clear()
                    await self._locate()
                    self._answers += 1
                    await self._relocate.wait()
                    if watcher.done():
                        watcher.result()  # raises the watch stream's failure
            finally:
                watcher.cancel()

    def _tracker_failed(self, error: TrackerError) -> None:
        log.warning(
            "no tracker answered mid-pull; fetching the rest from upstream",
            extra={"digest": self.digest, "error": error.message},
        )
        self._go_direct()

    async def _follow(self, events: object) -> None:
        async for placement in events:  # type: ignore[attr-defined]
            self._apply(placement)
        raise TrackerError("watch stream ended")

    async def _locate(self) -> None:
        now = _now()
        wanted = [
            c
            for c in self._chunks
            if not c.done.done()
            and (not c.busy or c.suspect or now - max(c.asked_at, c.nudged_at) < 1.0)
        ]
        if not wanted:
            return
        placement = await self._client.locate(
            self._node_id,
            self.digest,
            self.size,
            self._count,
            chunks=[c.index for c in wanted],
            max_leases=max(0, self._config.max_leases - self._leases),
            failed=[c.index for c in wanted if c.suspect],
        )
        for chunk in wanted:
            chunk.suspect = False
        self._apply(placement)

    def _apply(self, placement: Placement) -> None:
        if self._failure is not None:
            return  # the pull is failing: nothing more is started
        for placed in placement.chunks:
            if not 0 <= placed.index < self._count:
                continue
            chunk = self._chunks[placed.index]
            if chunk.done.done():
                if placed.directive is Directive.FETCH and chunk.arrived:
                    # The tracker lost track of our copy: a lease we never use would keep the
                    # chunk from everyone until it lapsed, and be handed out again.
                    self._announce(complete=(chunk.index,))
                continue
            chunk.directive = placed.directive
            chunk.unpublished = placed.directive is Directive.SWARM and not placed.metainfo
            if placed.directive is Directive.FETCH and not chunk.leased:
                # The lease is ours (its sources were lost, or nobody else fetches it). A range
                # fetch under way goes on under it: it never starts over.
                if chunk.fetching:
                    self._take_lease(chunk)
                else:
                    self._stop_work(chunk)
                    self._start(chunk, self._fetch(chunk, leased=True))
            elif chunk.swarming and chunk.torrent is not None:
                self._session.connect(chunk.torrent.infohash, _addresses(placed, self._node_id))
            elif chunk.busy:
                continue
            elif (
                placed.directive is Directive.SWARM
                and placed.metainfo
                and placed.metainfo != chunk.bad_metainfo
                and chunk.swarm_failures < MAX_SWARM_FAILURES
            ):
                self._start(chunk, self._swarm(chunk, placed))
            # WAIT: a fetcher has it, or the tracker hands its lease out when an upstream slot
            # frees up; either way the watch stream tells us.

    def _start(self, chunk: _Chunk, work: Awaitable[None]) -> None:
        chunk.started_at = _now()
        chunk.task = asyncio.ensure_future(work)
        chunk.task.add_done_callback(lambda task: self._finished(chunk, task))
        self._running += 1

    def _finished(self, chunk: _Chunk, task: asyncio.Future[None]) -> None:
        self._running -= 1
        error = None if task.cancelled() else task.exception()
        failure = self._failing(error)
        if failure is not None and self._failure is None:
            # The whole pull fails, not this chunk alone: the chunk awaited in order says so.
            self._failure = error = failure
            awaited = self._awaited
            if awaited is not None and not awaited.done.done():
                awaited.done.set_exception(failure)
        if self._direct:
            self._fetch_direct()
        if error is None:
            return
        if self._failure is not None and (error is not self._failure or unwritable(error)):
            # One failure is logged once, however many chunks met it before the pull stopped;
            # a disk that takes no writes, by the store (once a minute at most, for all pulls).
            log.debug("chunk stopped", extra={"digest": self.digest, "chunk": chunk.index})
            return
        log.warning(
            "chunk failed",
            extra={"digest": self.digest, "chunk": chunk.index, "error": repr(error)},
        )
        if self._failure is not None:
            return  # `_await_chunk` raises it
        if isinstance(error, (TorrentFailed, MetainfoInvalid)):
            chunk.swarm_failures += 1
            self._relocate.set()  # place it again: other peers, or a lease
            return
        chunk.upstream_failures += 1
        retry = isinstance(error, UpstreamUnavailable) and not self._direct
        if retry and chunk.upstream_failures < MAX_UPSTREAM_FAILURES:
            self._relocate.set()
        elif not chunk.done.done():
            chunk.done.set_exception(error)

    def _failing(self, error: BaseException | None) -> ContentInvalid | StoreFull | None:
        """The error as the whole pull's failure, if it is one: bad content, or a write of a
        chunk file (libtorrent's or a range fetch's) that the disk refused, full or read-only.
        The blob's readers then go on from the upstream (`node.blobs`), at once rather than
        after a stall."""
        if isinstance(error, ContentInvalid):
            return error
        if isinstance(error, TorrentFailed):
            error = error.os_error
        if not isinstance(error, OSError) or not unwritable(error) or self._writer is None:
            return None
        return self._writer.refused(error)

    def _go_direct(self) -> None:
        self._direct = True
        self._metrics.fallbacks.labels("tracker").inc()
        self._fetch_direct()

    def _fetch_direct(self) -> None:
        """Fetch the chunks left from upstream, in order, `fallback_parallel` at once. A chunk
        that was busy when the tracker failed (swarmed) is among them once that work stops."""
        for chunk in self._chunks:
            if self._ended or self._failure is not None:
                return
            if self._running >= self._config.fallback_parallel:
                return
            if not chunk.busy:
                self._start(chunk, self._fetch(chunk, leased=False))

    async def _await_chunk(self, chunk: _Chunk) -> None:
        """Wait for the next chunk in order. If even asking the tracker again did not get it
        moving, fetch it from upstream directly: a pull never hangs while upstream works."""
        chunk.excused_at = max(chunk.excused_at, _now())  # its wait starts now
        self._awaited = chunk
        while not chunk.done.done():
            if self._failure is not None:
                raise self._failure
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(chunk.done), timeout=1.0)
                break
            if self._stalled(chunk):
                log.warning(
                    "chunk stalled; fetching from upstream",
                    extra={
                        "digest": self.digest,
                        "chunk": chunk.index,
                        "directive": chunk.directive.name if chunk.directive else None,
                        "swarm_bytes": chunk.progress,
                    },
                )
                self._metrics.fallbacks.labels("stall").inc()
                self._stop_work(chunk)
                self._start(chunk, self._fetch(chunk, leased=False))
        chunk.done.result()

    def _stalled(self, chunk: _Chunk) -> bool:
        """Whether to fetch the chunk from upstream ourselves: no byte of it came for twice the
        stall timeout from what was getting it (the swarm), or nothing was. A range fetch runs
        to its end; a chunk we were told to wait for is the tracker's to move on, while there
        is a tracker."""
        now = _now()
        if chunk.fetching:
            return False
        if chunk.waiting and not self._direct:
            chunk.excused_at = now
            return False
        return now - max(chunk.progress_at, chunk.excused_at) > 2 * self._config.stall_timeout

    async def _watch_stalls(self) -> None:
        """Every chunk without progress for `stall_timeout` is placed again by the tracker: new
        peers, or the lease when its sources are gone; a swarmed one quiet for NUDGE_SECONDS
        is told its sources again, without starting over. All chunks at once, not in order."""
        while True:
            await asyncio.sleep(1.0)
            now = _now()
            stalled = False
            for chunk in self._chunks:
                if chunk.done.done():
                    continue
                self._track_progress(chunk)
                stalled = self._pieces_failed(chunk) or stalled
                quiet_since = max(chunk.progress_at, chunk.started_at)
                quiet = now - max(quiet_since, chunk.asked_at)
                if quiet > self._config.stall_timeout:
                    if chunk.swarming:
                        self._stop_work(chunk)  # swarm it afresh, with the peers we get now
                    chunk.asked_at = now
                    stalled = True
                elif (chunk.swarming or (chunk.unpublished and not chunk.busy)) and (
                    now - max(quiet_since, chunk.nudged_at) > NUDGE_SECONDS
                ):
                    # A chunk whose sources have not published its metainfo (the tracker's
                    # state started afresh) is asked for again too: each ask lets the tracker
                    # ask its holders to publish, once a lease TTL passed since it last did.
                    chunk.nudged_at = now
                    stalled = True
            if stalled:
                self._relocate.set()

    def _pieces_failed(self, chunk: _Chunk) -> bool:
        """Whether pieces of the swarmed chunk failed their hash since we last looked. The peers
        we were given sent them: the next Locate tells the tracker, which asks the chunk's
        holders to check their copies (a damaged one is withdrawn and the chunk fetched once,
        rather than each puller waiting out its stall timeout and fetching it itself)."""
        if not chunk.swarming or chunk.torrent is None:
            return False
        failed = self._session.hash_failures(chunk.torrent.infohash)
        if failed <= chunk.failed_pieces:
            return False
        chunk.failed_pieces, chunk.suspect = failed, True
        return True

    def _track_progress(self, chunk: _Chunk) -> None:
        """Note the time bytes last arrived, from the swarm or from upstream."""
        if chunk.swarming and chunk.torrent is not None:
            progress = self._session.progress(chunk.torrent.infohash)
            if progress > chunk.progress:
                chunk.progress = progress
                chunk.progress_at = _now()
        elif chunk.fetching and chunk.stream is not None and chunk.stream.received:
            chunk.progress_at = _now()

    def _stop_work(self, chunk: _Chunk) -> None:
        """Cancel whatever is getting this chunk, to get it another way."""
        if chunk.task is not None:
            chunk.task.cancel()
        if chunk.swarming and chunk.torrent is not None:
            self._session.remove(chunk.torrent.infohash)
            chunk.swarming = False

    # -- one chunk from upstream

    async def _fetch(self, chunk: _Chunk, leased: bool) -> None:
        assert self._directory is not None
        path = self._directory / chunk_name(self.digest, chunk.index)
        if leased:
            self._take_lease(chunk)
        chunk.fetching = True
        log.debug(
            "fetching chunk from upstream",
            extra={"digest": self.digest, "chunk": chunk.index, "leased": leased},
        )
        try:
            await self._write_range(chunk, path)
            if chunk.renewer is not None:
                chunk.renewer.cancel()
            hashing = self._hashed(chunk, path)
            if chunk.leased:
                # The upstream slot is free for the next chunk while this one is hashed.
                _, torrent = await asyncio.gather(self._report_fetched(chunk), hashing)
            else:
                torrent = await hashing
            chunk.torrent = torrent
            await self._session.add(torrent, self._directory, seed=True, hashed=True)
            # Published while the lease is still held: the tracker takes a chunk's metainfo
            # from its lease holder, and the lease ends once the blob is announced complete.
            await self._publish(torrent)
            self._chunk_done(chunk, "upstream")
        except BaseException:
            if chunk.leased:
                await self._release(chunk)
            raise
        finally:
            chunk.fetching = False
            self._drop_lease(chunk)

    async def _hashed(self, chunk: _Chunk, path: Path) -> ChunkTorrent:
        """The chunk's torrent, from the piece hashes taken as our fetches wrote its bytes, or
        from its file when those do not cover exactly its bytes."""
        pieces = chunk.hashes.pieces(chunk.length) if chunk.hashes is not None else None
        if pieces is not None:
            return metainfo.from_pieces(self.digest, self.size, chunk.index, pieces)
        return await asyncio.to_thread(
            metainfo.from_file, path, self.digest, self.size, chunk.index
        )

    def _take_lease(self, chunk: _Chunk) -> None:
        """Hold the chunk's lease, renewed while the fetch brings bytes."""
        self._leases += 1
        chunk.leased = True
        chunk.renewer = asyncio.create_task(self._renew(chunk))

    def _drop_lease(self, chunk: _Chunk) -> None:
        if chunk.renewer is not None:
            chunk.renewer.cancel()
            chunk.renewer = None
        if chunk.leased:
            self._leases -= 1
            chunk.leased = False
            self._relocate.set()  # room for another lease

    async def _write_range(self, chunk: _Chunk, path: Path) -> None:
        """The chunk's bytes from upstream into its file, from where earlier fetches of ours
        stopped; a transfer that breaks is resumed (`Resumes` says when, and when not)."""
        resumes = Resumes(self._metrics.upstream_resumes.inc)
        if chunk.hashes is None or chunk.fetched == 0:
            chunk.hashes = PieceHashes(self.size)
        hashes = chunk.hashes
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while chunk.fetched < chunk.length:
                start = chunk.start + chunk.fetched
                try:
                    async with self._upstream(start, chunk.end) as stream:
                        if stream.size != self.size:
                            raise ContentInvalid(
                                "the upstream's blob is not the size its manifest declares",
                                {"digest": self.digest, "declared": self.size, "size": stream.size},
                            )
                        chunk.stream = stream
                        async for block in blocks_between(stream, start, chunk.end):
                            await asyncio.to_thread(_store, fd, block, chunk.fetched, hashes)
                            chunk.fetched += sum(len(piece) for piece in block)
                except UpstreamUnavailable as e:
                    await resumes.after(e, progressed=chunk.start + chunk.fetched > start)
                    log.info(
                        "chunk transfer broke; resuming",
                        extra={
                            "digest": self.digest,
                            "chunk": chunk.index,
                            "offset": chunk.fetched,
                            "error": e.message,
                        },
                    )
                finally:
                    if chunk.stream is not None:
                        chunk.received += chunk.stream.received
                        chunk.stream = None
        finally:
            os.close(fd)

    async def _renew(self, chunk: _Chunk) -> None:
        """Renew the lease with the bytes received so far: the tracker moves a lease on once
        they stop growing, so they must grow with every read, not with every block stored."""
        while True:
            await asyncio.sleep(LEASE_RENEW_SECONDS)
            with contextlib.suppress(TrackerError):
                await self._client.renew_lease(
                    self._node_id, self.digest, chunk.index, chunk.fetch_progress()
                )

    async def _report_fetched(self, chunk: _Chunk) -> None:
        with contextlib.suppress(TrackerError):
            await self._client.renew_lease(
                self._node_id, self.digest, chunk.index, chunk.length, fetched=True
            )

    async def _release(self, chunk: _Chunk) -> None:
        with contextlib.suppress(TrackerError):
            await self._client.release_lease(
                self._node_id, self.digest, chunk.index, "fetch failed"
            )

    async def _publish(self, torrent: ChunkTorrent) -> None:
        if self._direct:
            return
        try:
            await self._client.publish(
                self._node_id, self.digest, self.size, self._count, torrent.index, torrent.metainfo
            )
        except MetainfoUnconfirmed:
            # We fetched it without the lease (the tracker's state started afresh, or a stalled
            # swarm went upstream): the tracker takes our metainfo once another node publishes
            # the same. Until then it must know we hold the chunk, or it leases it out again
            # (to us, among others) and the nodes that need it wait on a fetch nobody makes.
            log.info(
                "chunk fetched without its lease; its metainfo awaits a second witness",
                extra={"digest": self.digest, "chunk": torrent.index},
            )
            self._announce(complete=(torrent.index,))
        except TrackerError as e:
            log.warning(
                "publish failed",
                extra={"digest": self.digest, "chunk": torrent.index, "error": e.message},
            )

    # -- one chunk from peers

    async def _swarm(self, chunk: _Chunk, placed: ChunkPlacement) -> None:
        assert self._directory is not None and placed.metainfo is not None
        try:
            torrent = metainfo.parse(placed.metainfo, self.digest, self.size, chunk.index)
        except MetainfoInvalid as e:
            chunk.bad_metainfo = placed.metainfo
            log.warning(
                "ignoring bad metainfo",
                extra={"digest": self.digest, "chunk": chunk.index, "error": str(e)},
            )
            raise
        chunk.torrent = torrent
        chunk.swarming = True
        chunk.failed_pieces = 0
        chunk.fetched = 0  # the file is libtorrent's now: a later fetch writes it all again
        chunk.hashes = None
        await self._session.add(
            torrent,
            self._directory,
            seed=False,
            peers=_addresses(placed, self._node_id),
        )
        self._announce(partial=(chunk.index,))
        try:
            await self._session.finished(torrent.infohash)
        except TorrentFailed:
            self._session.remove(torrent.infohash)
            chunk.swarming = False
            raise
        self._chunk_done(chunk, "peer")
        self._announce(complete=(chunk.index,))

    def _chunk_done(self, chunk: _Chunk, source: str) -> None:
        if not chunk.done.done():
            chunk.done.set_result(source)
            seconds = _now() - chunk.started_at
            self._metrics.chunk_done(source, seconds)
            log.debug(
                "chunk arrived",
                extra={
                    "digest": self.digest,
                    "chunk": chunk.index,
                    "source": source,
                    "seconds": round(seconds, 3),
                },
            )

    def _announce(self, complete: tuple[int, ...] = (), partial: tuple[int, ...] = ()) -> None:
        if not self._direct:
            self._announcer.note(self.digest, self.size, self._count, complete, partial)

    def held(self) -> HeldBlob | None:
        """What this pull holds so far (chunks here whole, chunks being swarmed), for the
        tracker to hear again when the node joins again: a tracker that started afresh would
        otherwise believe nobody holds them. None when it holds nothing, or has ended."""
        if self._over or self._direct:
            return None
        complete = tuple(c.index for c in self._chunks if c.arrived)
        partial = tuple(c.index for c in self._chunks if c.swarming and not c.arrived)
        if not complete and not partial:
            return None
        return HeldBlob(self.digest, self.size, self._count, complete, partial)

    def metainfo(self, chunk: int) -> bytes | None:
        """The metainfo of a chunk this pull holds whole (None for any other): a tracker that
        started afresh asks the chunk's holders to publish it again, and takes it once two
        agree; a pull under way is one of those holders (one that ended holds nothing)."""
        if self._over or not 0 <= chunk < len(self._chunks):
            return None
        held = self._chunks[chunk]
        return held.torrent.metainfo if held.arrived and held.torrent is not None else None

    # -- the end

    async def committed(self, info: BlobInfo) -> None:
        self._over = True
        torrents = [c.torrent for c in self._chunks if c.torrent is not None]
        await self._on_complete(info, torrents)

    async def failed(self, error: BaseException) -> None:
        self._over = True
        corrupt = isinstance(error, ContentInvalid)  # the metainfo pulled with was bad
        for chunk in self._chunks:
            if chunk.task is not None:
                chunk.task.cancel()
            if chunk.torrent is not None:
                self._session.remove(chunk.torrent.infohash)
        if corrupt:
            self._on_corrupt(self.digest)
        self._announcer.forget(self.digest)
        if not self._direct:
            with contextlib.suppress(TrackerError):
                await self._client.withdraw(self._node_id, [self.digest], corrupt=corrupt)


def _store(fd: int, block: list[bytes], offset: int, hashes: PieceHashes) -> None:
    """Write a block of a chunk's range at `offset` of its file, and hash it (in a thread)."""
    written = os.pwritev(fd, block, offset)
    if written < sum(len(piece) for piece in block):  # a short write: a disk filling up
        pwrite_all(fd, memoryview(b"".join(block))[written:], offset + written)
    hashes.update(offset, block)


def _now() -> float:
    """The event loop's clock: a test's loop may run on virtual time."""
    return asyncio.get_running_loop().time()


def _addresses(placed: ChunkPlacement, own_id: str) -> list[PeerAddress]:
    found = []
    for peer in placed.peers:
        if peer.node_id == own_id or not peer.peer:
            continue
        with contextlib.suppress(ValueError):
            found.append(address.split(peer.peer))
    return found
