"""How long a tracker client took to move to another replica when its own failed.

A client is attached to the replica it talks to when that replica answered one of its calls and
each of its long-lived streams (the Watch streams of its pulls, the node's Tasks stream) is open
on it, as the replica confirmed. Leaving a replica starts a clock; the moment the client is
attached to another stops it, and that time is reported once per move: the node logs it and
counts it in `distributed_images_tracker_failover_seconds`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Reporter = Callable[[float], None]


class Attachment:
    """The replicas (by the client's generation number, which counts its moves) that its calls
    and streams are on. Single-owner: the client's event loop."""

    def __init__(
        self, report: Reporter | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.report = report
        self._clock = clock
        self._generation = 0
        self._left_at: float | None = None  # None: attached (or never moved)
        self._answered = -1  # the generation of the replica that last answered a call
        self._streams: dict[object, int] = {}

    @property
    def moving(self) -> bool:
        """Whether the client left a replica and is not yet attached to another."""
        return self._left_at is not None

    def moved(self, generation: int) -> None:
        """The client left its replica for the one of `generation`. Moving on again before it
        was attached there (that one failed too) keeps the first departure's time."""
        self._generation = generation
        if self._left_at is None:
            self._left_at = self._clock()

    def answered(self, generation: int) -> None:
        """A call was answered by the replica of `generation`."""
        self._answered = generation
        self._settle()

    def opened(self, stream: object, generation: int) -> None:
        """`stream` is open on the replica of `generation`: the replica said so."""
        self._streams[stream] = generation
        self._settle()

    def closed(self, stream: object) -> None:
        """`stream` ended for good: nothing waits for it to move."""
        self._streams.pop(stream, None)
        self._settle()

    def _settle(self) -> None:
        if self._left_at is None or self._answered != self._generation:
            return
        if any(g != self._generation for g in self._streams.values()):
            return
        seconds = self._clock() - self._left_at
        self._left_at = None
        if self.report is not None:
            self.report(seconds)
