"""This tracker process's open streams: the Watch streams (by blob) and the Tasks streams (by
node) that nodes hold open on it, and the notifications that reach them.

The state lives in the store, shared by every replica; a stream lives in the one process that
serves it. So the store carries notifications (`Changed`, `Gone`, `Orders`) to every replica's
hub, and the hub marks its watchers, wakes its inboxes, or ends the streams of a node that left.
Everything here is bounded by the streams open on this process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Changed:
    """Chunks of a blob changed: sources, metainfo or lease."""

    digest: str
    chunks: tuple[int, ...]


@dataclass(frozen=True)
class Gone:
    """The node left, expired or joined again: end its streams opened before `epoch` ended."""

    node_id: str
    epoch: int


@dataclass(frozen=True)
class Orders:
    """Work orders wait in the store for the node's Tasks stream."""

    node_id: str


Event = Changed | Gone | Orders


class Watcher:
    """A Watch stream's view of one blob: which chunks changed since the stream last looked,
    repeated changes of one chunk coalesced into one."""

    def __init__(
        self, node_id: str, digest: str, chunk_count: int, epoch: int = 0, watch_id: str = ""
    ) -> None:
        self.id = watch_id  # names the stream in the store: `<replica>:<n>`
        self.node_id = node_id
        self.digest = digest
        self.chunk_count = chunk_count
        self.epoch = epoch
        self._dirty: set[int] = set()
        self._ready = asyncio.Event()
        self.closed = False
        self.stopping = False  # closed because this replica stops: the node goes to another

    def mark(self, chunk: int) -> None:
        if 0 <= chunk < self.chunk_count:
            self._dirty.add(chunk)
            self._ready.set()

    async def changes(self) -> list[int] | None:
        """The chunks changed since the last call, or None once the watcher is closed."""
        while not self._dirty and not self.closed:
            self._ready.clear()
            await self._ready.wait()
        if self.closed:
            return None
        changed = sorted(self._dirty)
        self._dirty.clear()
        return changed

    def close(self, stopping: bool = False) -> None:
        self.closed = True
        self.stopping = stopping
        self._ready.set()


class Inbox:
    """A Tasks stream's wake-up: set when orders may be waiting, closed when the stream ends."""

    def __init__(self, node_id: str, epoch: int) -> None:
        self.node_id = node_id
        self.epoch = epoch
        self.closed = False
        self.stopping = False  # closed because this replica stops: the node goes to another
        self._ready = asyncio.Event()

    def wake(self) -> None:
        self._ready.set()

    def close(self, stopping: bool = False) -> None:
        self.closed = True
        self.stopping = stopping
        self._ready.set()

    def clear(self) -> None:
        self._ready.clear()

    async def wait(self) -> None:
        await self._ready.wait()


class Hub:
    def __init__(self) -> None:
        self._by_digest: dict[str, set[Watcher]] = {}
        self._by_node: dict[str, set[Watcher]] = {}
        self._inboxes: dict[str, set[Inbox]] = {}

    # ---- streams opening and closing ----

    def add_watcher(
        self, node_id: str, epoch: int, digest: str, chunk_count: int, watch_id: str
    ) -> Watcher:
        watcher = Watcher(node_id, digest, chunk_count, epoch, watch_id)
        self._by_digest.setdefault(digest, set()).add(watcher)
        self._by_node.setdefault(node_id, set()).add(watcher)
        return watcher

    def remove_watcher(self, watcher: Watcher, stopping: bool = False) -> None:
        watcher.close(stopping)
        _discard(self._by_digest, watcher.digest, watcher)
        _discard(self._by_node, watcher.node_id, watcher)

    def watch_count(self, node_id: str) -> int:
        return len(self._by_node.get(node_id, ()))

    def watchers(self) -> list[Watcher]:
        return [w for ws in self._by_digest.values() for w in ws]

    def open_inbox(self, node_id: str, epoch: int) -> Inbox:
        inbox = Inbox(node_id, epoch)
        self._inboxes.setdefault(node_id, set()).add(inbox)
        return inbox

    def close_inbox(self, inbox: Inbox, stopping: bool = False) -> None:
        inbox.close(stopping)
        _discard(self._inboxes, inbox.node_id, inbox)

    # ---- notifications ----

    def deliver(self, events: Iterable[Event]) -> None:
        for event in events:
            if isinstance(event, Changed):
                for watcher in self._by_digest.get(event.digest, ()):
                    for chunk in event.chunks:
                        watcher.mark(chunk)
            elif isinstance(event, Orders):
                for inbox in self._inboxes.get(event.node_id, ()):
                    inbox.wake()
            else:
                self._gone(event.node_id, event.epoch)

    def _gone(self, node_id: str, epoch: int) -> None:
        for watcher in list(self._by_node.get(node_id, ())):
            if watcher.epoch <= epoch:
                self.remove_watcher(watcher)
        for inbox in list(self._inboxes.get(node_id, ())):
            if inbox.epoch <= epoch:
                self.close_inbox(inbox)

    def resync(self) -> None:
        """Notifications may have been lost (the store was unreachable): every watcher hears of
        every chunk of its blob, and every inbox looks for orders."""
        for watcher in self.watchers():
            for chunk in range(watcher.chunk_count):
                watcher.mark(chunk)
        for inboxes in self._inboxes.values():
            for inbox in inboxes:
                inbox.wake()

    def close_all(self) -> None:
        """End every stream: this replica stops, or the store lost its state. The nodes hear
        UNAVAILABLE and go to another replica (where, after a lost state, they join again)."""
        for watcher in self.watchers():
            self.remove_watcher(watcher, stopping=True)
        for inboxes in list(self._inboxes.values()):
            for inbox in list(inboxes):
                self.close_inbox(inbox, stopping=True)


def _discard(index: dict[str, set[T]], key: str, item: T) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(item)
        if not members:
            del index[key]
