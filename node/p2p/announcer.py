"""Chunk announcements of a node's pulls, coalesced into few Announce calls.

A pull tells the tracker of each chunk it starts swarming (partial) and each it completes; a
blob's chunks start all at once, and the layers of an image are pulled side by side. Each call
costs a gRPC round trip on both ends, so what is noted within WINDOW seconds goes in one call:
typically one call where there were dozens. A chunk noted both partial and complete goes as
complete. A failed announcement is dropped, as a failed single one was: the node announces its
whole inventory at every (re)join.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from tracker.client import HeldBlob, TrackerClient
from tracker.errors import TrackerError

log = logging.getLogger(__name__)

WINDOW = 0.02  # seconds a note waits for others to join it


@dataclass
class _Pending:
    size: int
    chunk_count: int
    complete: set[int] = field(default_factory=set)
    partial: set[int] = field(default_factory=set)

    def held(self, digest: str) -> HeldBlob:
        return HeldBlob(
            digest,
            self.size,
            self.chunk_count,
            tuple(sorted(self.complete)),
            tuple(sorted(self.partial - self.complete)),
        )


class Announcer:
    def __init__(self, client: TrackerClient, node_id: str) -> None:
        self._client = client
        self._node_id = node_id
        self._pending: dict[str, _Pending] = {}
        self._flushing: asyncio.Task[None] | None = None

    def note(
        self,
        digest: str,
        size: int,
        chunk_count: int,
        complete: tuple[int, ...] = (),
        partial: tuple[int, ...] = (),
    ) -> None:
        pending = self._pending.setdefault(digest, _Pending(size, chunk_count))
        pending.complete.update(complete)
        pending.partial.update(partial)
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    def forget(self, digest: str) -> None:
        """Drop what is noted of a blob not announced yet (it is being withdrawn)."""
        self._pending.pop(digest, None)

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(WINDOW)
        finally:
            self._flushing = None
        pending, self._pending = self._pending, {}
        if not pending:
            return
        blobs = [p.held(digest) for digest, p in pending.items()]
        with contextlib.suppress(TrackerError):
            await self._client.announce(self._node_id, blobs)

    async def close(self) -> None:
        if self._flushing is not None:
            self._flushing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flushing
