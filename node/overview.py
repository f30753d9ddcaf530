"""A node's state for a person, as one JSON document (`GET /status`): ready or not and why, the
tracker and the peers, bytes delivered by source over the last minutes, recent pulls, seeded and
skipped archives, the store against its quota. The status page (`GET /`) draws it; `status
--node` and `doctor` read it.

Every list in it is bounded: the activity's own bounds, the archives of the images directory,
at most MAX_PEERS other nodes and MAX_TAGS tags an archive. The tracker is asked at most once
every TRACKER_CACHE_SECONDS, however often the page is loaded, and never for longer than
TRACKER_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from node.activity import BUCKET_SECONDS, SOURCES, Activity
from node.metrics import NodeMetrics
from node.readiness import Readiness
from node.seed import Seeds
from node.store.contentstore import ContentStore
from tracker.client import ClusterStatus
from tracker.errors import TrackerError

MAX_PEERS = 30
MAX_TAGS = 20
TRACKER_CACHE_SECONDS = 5.0
TRACKER_TIMEOUT = 2.0

Document = dict[str, Any]


class StatusSource(Protocol):
    async def status(self, include_blobs: bool = False, max_blobs: int = 0) -> ClusterStatus: ...


class TrackerView(Protocol):
    """What the overview needs of the node's membership (`node.membership.Membership`)."""

    tracker_address: str
    joins: int

    @property
    def client(self) -> StatusSource: ...

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


class Overview:
    def __init__(self, parts: Parts, clock: Callable[[], float] = time.monotonic) -> None:
        self._parts = parts
        self._clock = clock
        self._started = clock()
        self._cluster: tuple[float, ClusterStatus | str] | None = None

    async def document(self) -> Document:
        parts = self._parts
        readiness = parts.readiness()
        return {
            "ready": readiness.ready,
            "why": readiness.why,
            "problems": list(readiness.problems),
            "uptime_seconds": round(self._clock() - self._started, 1),
            "tracker": await self._tracker(),
            "peers": self._peers(),
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

    async def _tracker(self) -> Document:
        membership = self._parts.membership()
        if membership is None:
            return {"address": None, "embedded": None, "joined": False, "joins": 0, "nodes": []}
        cluster = await self._cluster_status(membership)
        view: Document = {
            "address": membership.tracker_address,
            "embedded": membership.embedded,
            "joined": membership.joined,
            "joins": membership.joins,
            "node_id": membership.node_id,
        }
        if isinstance(cluster, str):
            return {**view, "error": cluster, "nodes": [], "node_count": None}
        others = sorted(
            (n for n in cluster.nodes if n.id != membership.node_id), key=lambda n: n.id
        )
        view["node_count"] = len(cluster.nodes)
        view["nodes"] = [
            {
                "id": n.id,
                "registry": n.registry,
                "peer": n.peer,
                "zone": n.zone,
                "blobs": n.blobs,
                "seconds_since_heartbeat": round(n.seconds_since_heartbeat, 1),
            }
            for n in others[:MAX_PEERS]
        ]
        return view

    async def _cluster_status(self, membership: TrackerView) -> ClusterStatus | str:
        """The tracker's view of the cluster, or why it could not be had; cached briefly."""
        now = self._clock()
        if self._cluster is not None and now - self._cluster[0] < TRACKER_CACHE_SECONDS:
            return self._cluster[1]
        answer: ClusterStatus | str
        try:
            answer = await asyncio.wait_for(membership.client.status(), TRACKER_TIMEOUT)
        except TrackerError as e:
            answer = e.message
        except TimeoutError:
            answer = f"no answer within {TRACKER_TIMEOUT:g} s"
        self._cluster = (now, answer)
        return answer

    def _peers(self) -> Document:
        return {
            "connections": self._sample("swarm_peers"),
            "downloaded_bytes": self._sample("peer_bytes_total", direction="download"),
            "uploaded_bytes": self._sample("peer_bytes_total", direction="upload"),
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
