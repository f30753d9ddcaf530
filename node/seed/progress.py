"""Progress of a long import, logged every few seconds so an operator sees it move."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("node.seed")

INTERVAL = 5.0


class Progress:
    """Bytes done out of `total`; updated from the event loop thread only."""

    def __init__(
        self,
        archive: str,
        total: int,
        measure: Callable[[], int] | None = None,
        interval: float = INTERVAL,
    ) -> None:
        """`measure`, when given, tells how far along the import is (a position in a stream)
        in place of the sum of the bytes added."""
        self.archive = archive
        self.total = total
        self.done = 0
        self._measure = measure
        self._interval = interval
        self._started = time.monotonic()
        self._logged = self._started

    def add(self, count: int) -> None:
        self.update(self._measure() if self._measure else self.done + count)

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if now - self._logged >= self._interval:
            self._logged = now
            log.info(
                "importing archive",
                extra={
                    "archive": self.archive,
                    "done_bytes": self.done,
                    "total_bytes": self.total,
                    "percent": round(100 * self.done / self.total, 1) if self.total else 100.0,
                    "mib_per_s": round(self.done / max(now - self._started, 1e-6) / (1 << 20), 1),
                },
            )

    @property
    def seconds(self) -> float:
        return time.monotonic() - self._started
