"""What a node has been doing lately, for a person to look at (the status page at `GET /`).

`Traffic` keeps the blob bytes delivered to clients by source (cache, peer, upstream, seed) in
ten-second buckets over the last ten minutes. `Pulls` groups a client's requests for one
repository into pulls, a manifest asked by tag opening one, and keeps the most recent: what
was pulled, by whom, how long it took and where its bytes came from. Both are bounded, whatever
clients do: a fixed number of buckets, of open and of finished pulls.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

SOURCES = ("cache", "peer", "upstream", "seed")
BUCKET_SECONDS = 10
BUCKETS = 60  # ten minutes
IDLE_SECONDS = 30.0  # a pull with no request for this long is over: the next request starts one
QUIET_SECONDS = 5.0  # a pull with no request for this long looks done to a person
MAX_OPEN = 64
MAX_FINISHED = 20

Clock = Callable[[], float]


class Traffic:
    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._buckets: deque[tuple[int, Counter[str]]] = deque(maxlen=BUCKETS)

    def add(self, source: str, length: int) -> None:
        index = int(self._clock() // BUCKET_SECONDS)
        if not self._buckets or self._buckets[-1][0] != index:
            self._buckets.append((index, Counter()))
        self._buckets[-1][1][source] += length

    def buckets(self) -> list[dict[str, int]]:
        """Bytes by source per bucket, oldest first, the current one last; empty buckets too."""
        now = int(self._clock() // BUCKET_SECONDS)
        held = dict(self._buckets)
        return [
            {source: held.get(index, Counter())[source] for source in SOURCES}
            for index in range(now - BUCKETS + 1, now + 1)
        ]


@dataclass
class Pull:
    client: str
    image: str  # registry/repository:tag (or @digest)
    started: float  # wall clock, for people
    opened: float  # monotonic
    last: float  # monotonic: the end of its latest request
    blobs: int = 0
    failed: int = 0  # blob transfers that broke off
    bytes: Counter[str] = field(default_factory=Counter)

    def view(self, now: float, done: bool) -> dict[str, object]:
        return {
            "image": self.image,
            "client": self.client,
            "started": self.started,
            "seconds": round(self.last - self.opened, 3),
            "blobs": self.blobs,
            "failed_blobs": self.failed,
            "bytes": {source: self.bytes[source] for source in SOURCES},
            "state": "done" if done or now - self.last >= QUIET_SECONDS else "pulling",
            "idle_seconds": round(now - self.last, 1),
        }


Key = tuple[str, str, str]  # client, registry, repository


class Pulls:
    def __init__(self, clock: Clock = time.monotonic, wall: Clock = time.time) -> None:
        self._clock = clock
        self._wall = wall
        self._open: OrderedDict[Key, Pull] = OrderedDict()
        self._finished: deque[Pull] = deque(maxlen=MAX_FINISHED)

    def manifest(self, client: str, ns: str, name: str, reference: str) -> None:
        """A manifest was served: by tag, a new pull of that tag; by digest (a platform's
        manifest of an index), part of the pull under way, or a pull of its own."""
        key = (client, ns, name)
        self._expire()
        by_digest = ":" in reference
        if key in self._open and by_digest:
            self._touch(key)
            return
        self._start(key, f"{ns}/{name}{'@' if by_digest else ':'}{reference}")

    def blob(
        self, client: str, ns: str, name: str, delivered: Mapping[str, int], complete: bool
    ) -> None:
        """A blob transfer ended, having delivered these bytes by source."""
        key = (client, ns, name)
        self._expire()
        if key not in self._open:  # blobs of a manifest fetched long ago, or elsewhere
            self._start(key, f"{ns}/{name}")
        pull = self._touch(key)
        pull.blobs += 1
        pull.failed += 0 if complete else 1
        pull.bytes.update(delivered)

    def recent(self) -> list[dict[str, object]]:
        """Pulls under way, then finished ones, newest first."""
        self._expire()
        now = self._clock()
        pulling = [p.view(now, False) for p in reversed(self._open.values())]
        return pulling + [p.view(now, True) for p in reversed(self._finished)]

    def _start(self, key: Key, image: str) -> None:
        self._finish(key)
        now = self._clock()
        self._open[key] = Pull(key[0], image, self._wall(), now, now)
        while len(self._open) > MAX_OPEN:
            self._finish(next(iter(self._open)))

    def _touch(self, key: Key) -> Pull:
        pull = self._open[key]
        pull.last = self._clock()
        self._open.move_to_end(key)
        return pull

    def _finish(self, key: Key) -> None:
        pull = self._open.pop(key, None)
        if pull is not None:
            self._finished.append(pull)

    def _expire(self) -> None:
        deadline = self._clock() - IDLE_SECONDS
        while self._open:
            key, pull = next(iter(self._open.items()))
            if pull.last > deadline:
                return
            self._finish(key)


class Activity:
    """The one object the registry API tells what it served."""

    def __init__(self, clock: Clock = time.monotonic, wall: Clock = time.time) -> None:
        self.traffic = Traffic(clock)
        self.pulls = Pulls(clock, wall)

    def delivered(self, source: str, length: int) -> None:
        self.traffic.add(source, length)
