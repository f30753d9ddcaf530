"""One-way delivery from the tracker's state to the gRPC stream a node holds open.

A `Mailbox` queues orders for a node's Tasks stream; a `Watcher` collects which chunks of a blob
changed for a Watch stream, coalescing repeated changes of one chunk into one event. Both are
bounded and both end their stream when closed (the node left, or joined again).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    def __init__(self, bound: int) -> None:
        self._items: deque[T] = deque()
        self._bound = bound
        self._ready = asyncio.Event()
        self.closed = False

    def put(self, item: T) -> bool:
        if self.closed or len(self._items) >= self._bound:
            return False
        self._items.append(item)
        self._ready.set()
        return True

    async def get(self) -> T | None:
        """The next item, or None once the mailbox is closed."""
        while not self._items and not self.closed:
            self._ready.clear()
            await self._ready.wait()
        return None if self.closed else self._items.popleft()

    def close(self) -> None:
        self.closed = True
        self._ready.set()


class Watcher:
    def __init__(self, node_id: str, digest: str) -> None:
        self.node_id = node_id
        self.digest = digest
        self._dirty: set[int] = set()
        self._ready = asyncio.Event()
        self.closed = False

    def mark(self, chunk: int) -> None:
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

    def close(self) -> None:
        self.closed = True
        self._ready.set()
