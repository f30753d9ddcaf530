"""Who may set a chunk's metainfo, the one thing a node tells the tracker that others act on.

Metainfo is taken from the node that holds the chunk's lease (it fetched the bytes from the
upstream), from a seeder the operator named (it imported them from an archive), or, once known,
again from anyone who publishes the very same bytes. Any other node (one that fetched the whole
blob alone, or a holder asked to republish after a tracker restart) is a witness: its metainfo is
taken once a second node publishes the same, so no single node can decide what a chunk is.
A wrong metainfo can only waste work (the blob's digest check catches it), never change content.
"""

from __future__ import annotations

import hashlib

from distributed_images.recent import Recent

MAX_PENDING = 100_000


def fingerprint(metainfo: bytes) -> str:
    return hashlib.sha256(metainfo).hexdigest()


class Witnesses:
    """Unconfirmed metainfo, one per chunk, the oldest forgotten first beyond `capacity` (the
    in-memory store's; the Redis store keeps them per blob, shared by every replica)."""

    def __init__(self, capacity: int = MAX_PENDING) -> None:
        self._pending: Recent[tuple[str, int], tuple[str, str]] = Recent(capacity)

    def confirm(self, digest: str, chunk: int, fingerprint: str, node_id: str) -> bool:
        """True when another node already published these bytes (`fingerprint`) for the chunk;
        otherwise they wait for a second witness (replacing what this chunk had waiting)."""
        key = (digest, chunk)
        waiting = self._pending.get(key)
        if waiting is not None and waiting[0] == fingerprint and waiting[1] != node_id:
            self._pending.pop(key)
            return True
        self._pending.remember(key, (fingerprint, node_id))
        return False

    def __len__(self) -> int:
        return len(self._pending)
