"""Stopping on SIGTERM or SIGINT within a grace period, whatever the node is busy with.

The signal is taken by a plain Python handler: it runs in the main thread between two bytecodes
even while the event loop is busy, where a loop-level handler would wait for the loop. It asks
the loop to stop (the node then closes its listeners, lets requests in flight finish, cancels
downloads and leaves the cluster), and starts a watchdog that ends the process once the grace
period is over, should stopping take longer. A second signal ends the process at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXIT_UNCLEAN = 1


class Shutdown:
    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._signalled = False

    def install(self) -> asyncio.Event:
        """Handle the signals from now on; the event is set at the first. Call on the loop."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def handle(signum: int, frame: FrameType | None) -> None:
            if self._signalled:
                _exit(f"{signal.Signals(signum).name} again: exiting at once")
            self._signalled = True
            loop.call_soon_threadsafe(stop.set)
            watchdog = threading.Timer(self.grace, self._expired)
            watchdog.daemon = True
            watchdog.start()

        for sig in SIGNALS:
            signal.signal(sig, handle)
        return stop

    def _expired(self) -> None:
        _exit(f"still stopping after its grace period of {self.grace:.0f} s: exiting")


def _exit(reason: str) -> None:
    log.error(reason)
    logging.shutdown()  # flush the handlers: os._exit skips every cleanup
    os._exit(EXIT_UNCLEAN)
