"""Stored content found damaged, fetched again; content verified after a crash, seeded again.

The store purges a blob whose bytes no longer match its digest (found by the verification after
an unclean stop, by the scrub, or by libtorrent when a seeded piece fails its hash) and tells
this module, which stops seeding it, withdraws it from the tracker and fetches it again from
where it came: the archives of the images directory that hold it (imported again), else the
registry and repository it was pulled from, as a client's pull would (through the swarm when
there is one). A blob whose origin is unknown (a manifest, or a blob stored by a version that
kept no origins) is fetched again when a client next asks for it. One refetch at a time, from a
bounded queue: a disk that rots many blobs at once does not start as many pulls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from node.errors import NodeError
from node.metrics import NodeMetrics
from node.p2p.swarm import Swarm
from node.store.contentstore import BlobInfo
from node.store.integrity import Damaged

log = logging.getLogger(__name__)

MAX_QUEUED = 1024

# Fetch a blob into the store from (namespace, repository), as a client's pull would.
Refetch = Callable[[str, str, str], Awaitable[None]]
# Import again the archives that hold a digest; whether there were any.
Reimport = Callable[[str], bool]


class Repair:
    """The store's `IntegrityEvents`, acted on."""

    def __init__(
        self,
        swarm: Swarm,
        metrics: NodeMetrics,
        refetch: Refetch,
        reimport: Reimport | None = None,
    ) -> None:
        self._swarm = swarm
        self._metrics = metrics
        self._refetch = refetch
        self._reimport = reimport
        self._queue: asyncio.Queue[Damaged] = asyncio.Queue(MAX_QUEUED)
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the store's events

    def restored(self, info: BlobInfo) -> None:
        self._spawn(self._swarm.seed(info), info.digest)

    def damaged(self, blob: Damaged) -> None:
        self._metrics.damaged_blobs.labels(blob.found_by).inc()
        self._swarm.forget(blob.digest)
        if self._reimport is not None and self._reimport(blob.digest):
            log.info("importing its archive again", extra={"digest": blob.digest})
            self._metrics.refetches.labels("archive").inc()
            return
        if blob.origin is None:
            log.info("origin unknown: fetched again when asked for", extra={"digest": blob.digest})
            self._metrics.refetches.labels("on_demand").inc()
            return
        try:
            self._queue.put_nowait(blob)
        except asyncio.QueueFull:
            log.warning("too many blobs to fetch again: this one waits for a client")
            self._metrics.refetches.labels("on_demand").inc()

    def verified(self, reason: str, length: int) -> None:
        self._metrics.verified_bytes.labels(reason).inc(length)

    # -- the owner task

    async def run(self) -> None:
        try:
            while True:
                await self._fetch_again(await self._queue.get())
        finally:
            for task in list(self._tasks):
                task.cancel()

    async def _fetch_again(self, blob: Damaged) -> None:
        assert blob.origin is not None
        ns, repo = blob.origin
        log.info("fetching a damaged blob again", extra={"digest": blob.digest, "repo": repo})
        try:
            await self._refetch(ns, repo, blob.digest)
        except (NodeError, OSError) as e:
            log.warning(
                "fetching a damaged blob again failed: fetched when asked for",
                extra={"digest": blob.digest, "error": str(e)},
            )
            self._metrics.refetches.labels("failed").inc()
            return
        self._metrics.refetches.labels("fetched").inc()

    def _spawn(self, work: Coroutine[Any, Any, None], digest: str) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, digest))

    def _done(self, task: asyncio.Task[None], digest: str) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "cannot seed a verified blob",
                extra={"digest": digest, "error": repr(task.exception())},
            )
