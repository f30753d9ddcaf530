"""An asyncio event loop on virtual time, for unit tests of timing logic (stalls, leases).

When nothing is ready, the loop's clock jumps to its next timer instead of sleeping, so a test of
what happens after minutes of a slow transfer runs in well under a second of real time. I/O and
worker threads (`asyncio.to_thread`) still work: the loop waits a real instant for them before
it jumps. Code under test must read time from the loop (`loop.time()`), not from `time`.

A test marks itself `@on_virtual_time`: it is an `async def` that runs on a loop of its own.
"""

from __future__ import annotations

import asyncio
import functools
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

REAL_WAIT = 0.002  # seconds of real time given to I/O and threads before the clock jumps


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:  # no timer due: only I/O can wake the loop
            return super().select(None)
        ready = super().select(min(timeout, REAL_WAIT))
        if ready or timeout <= REAL_WAIT:
            return ready
        assert self.loop is not None
        self.loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self._now = 0.0

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to its end on a loop of its own on virtual time."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)


def on_virtual_time(test: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """A test (`async def`, fixtures as arguments) run to its end by `run`."""

    @functools.wraps(test)
    def synchronous(*args: Any, **kwargs: Any) -> T:
        return run(test(*args, **kwargs))

    return synchronous
