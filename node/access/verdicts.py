"""What the upstream answered about access, remembered for a while: one question in flight per
key, answers kept for a TTL and, when the upstream cannot be asked, still known past it.

Keys are chosen by clients (credential, registry, repository), so the map is bounded: the least
recently asked entries are forgotten first. Only a keyed hash of a credential is ever part of a
key (`Credential.key`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from distributed_images.recent import Recent

V = TypeVar("V")
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Verdict(Generic[V]):
    value: V
    expires: float  # monotonic

    @property
    def fresh(self) -> bool:
        return self.expires > time.monotonic()


class Verdicts(Generic[V]):
    def __init__(
        self, ttl: float, keep: Callable[[V], bool] = lambda _: True, limit: int = MAX_ENTRIES
    ) -> None:
        self._ttl = ttl
        self._keep = keep  # which answers are verdicts worth remembering
        self._known: Recent[Hashable, Verdict[V]] = Recent(limit)
        self._asking: dict[Hashable, asyncio.Task[V]] = {}

    def last(self, key: Hashable) -> Verdict[V] | None:
        """The last verdict, fresh or not."""
        return self._known.get(key)

    def remember(self, key: Hashable, value: V) -> None:
        self._known.remember(key, Verdict(value, time.monotonic() + self._ttl))

    def forget(self, key: Hashable) -> None:
        self._known.pop(key)

    async def get(self, key: Hashable, ask: Callable[[], Awaitable[V]]) -> V:
        """The fresh verdict, or `ask()`'s answer (remembered if `keep` says so). Concurrent callers
        with one key share one question, which runs to its end even when the caller that started
        it goes away: a rollout's parallel requests cost one upstream check."""
        known = self._known.get(key)
        if known is not None and known.fresh:
            return known.value
        asking = self._asking.get(key)
        if asking is None:
            loop = asyncio.get_running_loop()
            asking = loop.create_task(self._ask(key, ask), name="access check")
            asking.add_done_callback(_retrieved)
            self._asking[key] = asking
        return await asyncio.shield(asking)

    async def _ask(self, key: Hashable, ask: Callable[[], Awaitable[V]]) -> V:
        try:
            value = await ask()
            if self._keep(value):
                self.remember(key, value)
            return value
        finally:
            del self._asking[key]


def _retrieved(task: asyncio.Task[V]) -> None:
    """Every waiter may have gone: the outcome is read here, so it is never reported unread."""
    if not task.cancelled():
        task.exception()
