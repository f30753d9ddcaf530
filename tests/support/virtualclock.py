"""An asyncio event loop on virtual time, for unit tests of timing logic (stalls, leases).

When nothing is ready, the loop's clock jumps to its next timer instead of sleeping, so a test of
what happens after minutes of a slow transfer runs in a few seconds of real time. I/O and worker
threads (`asyncio.to_thread`) still work: the clock stands still while a worker thread runs,
however slow a loaded machine makes it, and the loop waits a real instant for I/O before it
jumps. Code under test must read time from the loop (`loop.time()`), not from `time`.

A test marks itself `@on_virtual_time`: it is an `async def` that runs on a loop of its own.
"""

from __future__ import annotations

import asyncio
import functools
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

REAL_WAIT = 0.002  # seconds of real time given to I/O before the clock jumps
BUSY_WAIT = 0.05  # seconds of real time waited at once while a worker thread runs


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        assert self.loop is not None
        if timeout is None:  # no timer due: only I/O can wake the loop
            return super().select(None)
        if self.loop.working:  # a worker thread's result will wake the loop: time stands still
            return super().select(min(timeout, BUSY_WAIT))
        ready = super().select(min(timeout, REAL_WAIT))
        if not ready:
            # Nothing came: the clock goes to the next timer, however near. Left where it was, a
            # timer due within REAL_WAIT would stay that far ahead, and never fire.
            self.loop.advance(timeout)
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self._now = 0.0
        self._working = 0  # run_in_executor jobs not done yet

    def time(self) -> float:
        return self._now

    @property
    def working(self) -> bool:
        return self._working > 0

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> asyncio.Future[Any]:
        future = super().run_in_executor(executor, func, *args)
        self._working += 1
        future.add_done_callback(self._finished_work)
        return future

    def _finished_work(self, future: asyncio.Future[Any]) -> None:
        self._working -= 1

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
