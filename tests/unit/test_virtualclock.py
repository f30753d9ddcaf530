"""The virtual clock of the timing tests: a timer fires however near it is due."""

from __future__ import annotations

import asyncio
import threading

from tests.support.virtualclock import REAL_WAIT, run


def test_a_timer_due_within_the_real_wait_fires() -> None:
    woke: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(REAL_WAIT / 2)
        woke.append(loop.time() - start)

    # On a thread of its own: a clock that never reaches the timer would spin forever.
    thread = threading.Thread(target=run, args=(main(),), daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the timer never fired"
    assert woke and woke[0] >= REAL_WAIT / 2
