"""A node's state for a person, as one JSON document (`GET /status`): ready or not and why, the
tracker and the peers, bytes delivered by source over the last minutes, recent pulls, seeded and
skipped archives, the store against its quota. The status page (`GET /`) draws it; `status
--node` and `doctor` read it.

Every list in it is bounded: the activity's own bounds, the archives of the images directory,
at most MAX_PEERS peers and MAX_TAGS tags an archive. The peers are those this node has
connections open to (libtorrent's view): the tracker tells the cluster's membership to operators
only.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from node.activity import BUCKET_SECONDS, SOURCES, Activity
from node.metrics import NodeMetrics
from node.p2p.session import ConnectedPeer
from node.readiness import Readiness
from node.seed import Seeds
from node.store.contentstore import ContentStore

MAX_PEERS = 30
MAX_TAGS = 20

Document = dict[str, Any]


class TrackerView(Protocol):
    """What the overview needs of the node's membership (`node.membership.Membership`)."""

    tracker_address: str
    joins: int

    @property
    def node_id(self) -> str: ...

    @property
    def embedded(self) -> bool: ...

    @property
    def joined(self) -> bool: ...


@dataclass
class Parts:
    """The node's parts the overview reads; `membership` is None until the node listens."""

    readiness: Callable[[], Readiness]
    metrics: NodeMetrics
    store: ContentStore
    data_dir: Path
    quota: int
    low_watermark: float
    seeds: Seeds | None
    activity: Activity
    membership: Callable[[], TrackerView | None]
    connected_peers: Callable[[], Awaitable[list[ConnectedPeer]]]


class Overview:
    def __init__(self, parts: Parts, clock: Callable[[], float] = time.monotonic) -> None:
        self._parts = parts
        self._clock = clock
        self._started = clock()

    async def document(self) -> Document:
        parts = self._parts
        readiness = parts.readiness()
        return {
            "ready": readiness.ready,
            "why": readiness.why,
            "problems": list(readiness.problems),
            "uptime_seconds": round(self._clock() - self._started, 1),
            "tracker": self._tracker(),
            "peers": await self._peers(),
            "traffic": {
                "bucket_seconds": BUCKET_SECONDS,
                "sources": list(SOURCES),
                "buckets": parts.activity.traffic.buckets(),
                "totals": {s: self._sample("blob_bytes_total", source=s) for s in SOURCES},
            },
            "pulls": parts.activity.pulls.recent(),
            "archives": self._archives(),
            "store": self._store(),
        }

    def _sample(self, name: str, **labels: str) -> int:
        value = self._parts.metrics.registry.get_sample_value(f"distributed_images_{name}", labels)
        return int(value or 0)

    def _tracker(self) -> Document:
        membership = self._parts.membership()
        if membership is None:
            return {"address": None, "embedded": None, "joined": False, "joins": 0}
        return {
            "address": membership.tracker_address,
            "embedded": membership.embedded,
            "joined": membership.joined,
            "joins": membership.joins,
            "node_id": membership.node_id,
        }

    async def _peers(self) -> Document:
        connected = await self._parts.connected_peers()
        return {
            "connections": self._sample("swarm_peers"),
            "downloaded_bytes": self._sample("peer_bytes_total", direction="download"),
            "uploaded_bytes": self._sample("peer_bytes_total", direction="upload"),
            "connected": [asdict(peer) for peer in connected[:MAX_PEERS]],
            "more_connected": max(0, len(connected) - MAX_PEERS),
        }

    def _archives(self) -> Document:
        seeds = self._parts.seeds
        if seeds is None:
            return {"images_dir": None, "seeded": [], "skipped": []}
        seeded = [
            {
                "name": archive.name,
                "format": archive.format,
                "images": len(archive.images),
                "tags": [str(ref) for ref, _ in archive.tags[:MAX_TAGS]],
                "more_tags": max(0, len(archive.tags) - MAX_TAGS),
            }
            for archive in seeds.archives()
        ]
        skipped = [{"name": s.name, "reason": s.reason, "fix": s.fix} for s in seeds.skipped()]
        return {"images_dir": str(seeds.images_dir), "seeded": seeded, "skipped": skipped}

    def _store(self) -> Document:
        parts = self._parts
        try:
            free = shutil.disk_usage(parts.data_dir).free
        except OSError:
            free = None
        return {
            "data_dir": str(parts.data_dir),
            "bytes": parts.store.usage(),
            "quota_bytes": parts.quota,
            "low_watermark": parts.low_watermark,
            "disk_free_bytes": free,
            "uid": os.getuid(),
        }
