"""Exponential backoff with jitter, for reconnecting to the tracker."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial: float = 0.2, maximum: float = 5.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._next = initial

    def reset(self) -> None:
        self._next = self.initial

    def next(self) -> float:
        """The next delay: grows by `factor` up to `maximum`, spread by +-20% so that a whole
        cluster does not reconnect in lockstep after a tracker restart."""
        delay = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return delay * random.uniform(0.8, 1.2)
