"""Rendezvous (highest random weight) hashing: which nodes a preheat of an image lands on.

Each node scores `hash(key, node)`; the `count` highest win. A node that comes or goes moves at
most one place of the selection, so repeating a preheat after the cluster changed mostly hits
nodes that already hold the image.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable


def score(key: str, node_id: str) -> int:
    digest = hashlib.blake2b(f"{key}\0{node_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def choose(key: str, nodes: Iterable[str], count: int | None = None) -> list[str]:
    """The `count` nodes (all when None) ranked highest for `key`, best first."""
    ranked = [(score(key, node_id), node_id) for node_id in nodes]
    if count is not None:
        ranked = heapq.nlargest(count, ranked)
    else:
        ranked.sort(reverse=True)
    return [node_id for _, node_id in ranked]
