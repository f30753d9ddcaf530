"""Leases on cold chunks: the right, and the duty, to fetch a chunk from upstream.

Invariant: at most one lease per chunk, ever. The table is owned by the tracker's event loop and
no method awaits, so a grant cannot interleave with another grant. A lease lapses `ttl` seconds
after it was granted or last made progress; a renewal that reports no new bytes does not extend
it, so a holder that stalls loses its lease as surely as one that died. A holder that never
renews at all loses it `first_renewal` seconds after the grant.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field

ChunkKey = tuple[str, int]  # (digest, chunk index)


@dataclass(slots=True)
class Lease:
    holder: str
    digest: str
    chunk: int
    granted_at: float
    expires_at: float
    progress: int = 0
    renewals: int = field(default=0)
    fetched: bool = False  # the range is in; the holder publishes it
    heard: bool = False  # the holder renewed it once: it is alive and fetching

    @property
    def key(self) -> ChunkKey:
        return (self.digest, self.chunk)


FIRST_RENEWAL = 4.0  # seconds a new lease waits for its holder's first renewal


class LeaseTable:
    def __init__(self, ttl: float, first_renewal: float = FIRST_RENEWAL) -> None:
        self.ttl = ttl
        # A holder renews every second from the moment it starts; one that has not within a
        # few seconds died before it began (a lease handed to a dead node's watch stream).
        self.first_renewal = min(ttl, first_renewal)
        self._leases: dict[ChunkKey, Lease] = {}
        self._by_holder: dict[str, dict[ChunkKey, Lease]] = {}
        self._by_digest: dict[str, int] = {}
        self._fetching: dict[str, int] = {}  # leases whose range is still coming in, by digest
        self._fetching_total = 0
        self._deadlines: list[tuple[float, str, int]] = []  # a heap; stale entries are skipped

    def __len__(self) -> int:
        return len(self._leases)

    def __iter__(self) -> Iterator[Lease]:
        return iter(list(self._leases.values()))

    def get(self, digest: str, chunk: int) -> Lease | None:
        return self._leases.get((digest, chunk))

    def grant(self, holder: str, digest: str, chunk: int, now: float) -> Lease:
        key = (digest, chunk)
        if key in self._leases:
            raise RuntimeError(f"chunk {digest}.{chunk} is already leased")
        lease = Lease(holder, digest, chunk, now, expires_at=now + self.first_renewal)
        self._leases[key] = lease
        self._by_holder.setdefault(holder, {})[key] = lease
        self._by_digest[digest] = self._by_digest.get(digest, 0) + 1
        self._count_fetching(digest, 1)
        heapq.heappush(self._deadlines, (lease.expires_at, digest, chunk))
        return lease

    def renew(
        self, holder: str, digest: str, chunk: int, progress: int, now: float
    ) -> Lease | None:
        """The holder's lease, extended if `progress` grew; None when it holds no lease."""
        lease = self._leases.get((digest, chunk))
        if lease is None or lease.holder != holder or lease.expires_at <= now:
            return None
        if not lease.heard:
            lease.heard = True
            lease.expires_at = max(lease.expires_at, lease.granted_at + self.ttl)
            heapq.heappush(self._deadlines, (lease.expires_at, digest, chunk))
        if progress > lease.progress:
            lease.progress = progress
            lease.renewals += 1
            lease.expires_at = now + self.ttl
            heapq.heappush(self._deadlines, (lease.expires_at, digest, chunk))
        return lease

    def release(self, digest: str, chunk: int) -> Lease | None:
        lease = self._leases.pop((digest, chunk), None)
        if lease is not None:
            held = self._by_holder[lease.holder]
            del held[lease.key]
            if not held:
                del self._by_holder[lease.holder]
            self._by_digest[lease.digest] -= 1
            if not self._by_digest[lease.digest]:
                del self._by_digest[lease.digest]
            if not lease.fetched:
                self._count_fetching(lease.digest, -1)
        return lease

    def fetched(self, digest: str, chunk: int) -> bool:
        """The lease's range is in (it lasts until published); False if it was already."""
        lease = self._leases.get((digest, chunk))
        if lease is None or lease.fetched:
            return False
        lease.fetched = True
        self._count_fetching(digest, -1)
        return True

    def fetching(self, digest: str | None = None) -> int:
        """Leases whose range is still coming in from upstream: on the blob, or on any."""
        return self._fetching_total if digest is None else self._fetching.get(digest, 0)

    def _count_fetching(self, digest: str, change: int) -> None:
        self._fetching_total += change
        count = self._fetching.get(digest, 0) + change
        if count:
            self._fetching[digest] = count
        else:
            self._fetching.pop(digest, None)

    def leased(self, digest: str) -> bool:
        return digest in self._by_digest

    def held_by(self, holder: str) -> list[Lease]:
        return list(self._by_holder.get(holder, {}).values())

    def count_held(self, holder: str) -> int:
        """Leases the holder holds, on any blob."""
        return len(self._by_holder.get(holder, {}))

    def count(self, holder: str, digest: str) -> int:
        return sum(1 for d, _ in self._by_holder.get(holder, {}) if d == digest)

    def expire(self, now: float) -> list[Lease]:
        """Remove and return the leases whose time ran out."""
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, digest, chunk = heapq.heappop(self._deadlines)
            lease = self._leases.get((digest, chunk))
            if lease is not None and lease.expires_at <= now:
                self.release(digest, chunk)
                expired.append(lease)
        return expired
