"""The store's content, verified in the background.

First the suspects: blobs not known to be on disk after an unclean stop, verified at full speed
(a client asking for one first has it verified at once, `ContentStore.check`). Then the scrub:
the blob verified longest ago, read back from the disk and hashed, at most `scrub_rate` bytes a
second, each blob at most once per `scrub_interval`. What fails is purged by the store and
fetched again (`node.repair`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from distributed_images.settings import parse_size
from node.store import integrity
from node.store.contentstore import ContentStore

log = logging.getLogger(__name__)

IDLE_SECONDS = 60.0  # between looks for a blob due, when none is


@dataclass
class ScrubConfig:
    scrub_rate: int = field(
        default=16 << 20,
        metadata={
            "help": "bytes per second the background scrub reads back and verifies (0: off)",
            "parse": parse_size,
            "metavar": "BYTES/S",
        },
    )
    scrub_interval: float = field(
        default=7 * 24 * 3600.0,
        metadata={"help": "seconds before a blob is verified again by the scrub", "metavar": "S"},
    )


class Pacer:
    """Keeps a rate: `take(n)` returns once n more bytes fit in it."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._due = time.monotonic()

    async def take(self, length: int) -> None:
        now = time.monotonic()
        start = max(self._due, now)
        self._due = start + length / self._rate
        if start > now:
            await asyncio.sleep(start - now)


class Scrubber:
    def __init__(self, store: ContentStore, config: ScrubConfig) -> None:
        self._store = store
        self._config = config

    async def run(self) -> None:
        await self._verify_suspects()
        if self._config.scrub_rate <= 0:
            return
        pacer = Pacer(self._config.scrub_rate)
        while True:
            due = self._store.due_for_scrub(self._config.scrub_interval)
            if due is None:
                await asyncio.sleep(min(IDLE_SECONDS, max(1.0, self._config.scrub_interval)))
                continue
            await self._verify(due.digest, integrity.SCRUB, pacer)

    async def _verify_suspects(self) -> None:
        suspects = self._store.suspects()
        if not suspects:
            return
        started = time.monotonic()
        for digest in suspects:
            await self._verify(digest, integrity.RECOVERY, None)
        log.info(
            "verified the blobs not known to be on disk",
            extra={"blobs": len(suspects), "seconds": round(time.monotonic() - started, 1)},
        )

    async def _verify(self, digest: str, reason: str, pacer: Pacer | None) -> None:
        try:
            await self._store.verify(digest, reason, pacer.take if pacer else None)
        except Exception:  # one blob's failure must not end the scrub, nor spin it
            log.exception("verifying a stored blob failed", extra={"digest": digest})
            await asyncio.sleep(IDLE_SECONDS)
