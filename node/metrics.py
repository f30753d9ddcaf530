"""The node's metrics, declared in one place. Names are part of the product's contract
(DESIGN section 6); `endpoint` labels are route names, never raw paths."""

from __future__ import annotations

import math
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class NodeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.blob_bytes = Counter(
            "distributed_images_blob_bytes",
            "Blob bytes delivered to clients, by where they came from",
            ["source"],
            registry=r,
        )
        self.peer_bytes = Counter(
            "distributed_images_peer_bytes",
            "Bytes exchanged with peers over the swarm",
            ["direction"],
            registry=r,
        )
        self.peer_redundant_bytes = Counter(
            "distributed_images_peer_redundant_bytes",
            "Bytes downloaded from peers that were wasted: already had, or failed their piece hash",
            registry=r,
        )
        self.upstream_bytes = Counter(
            "distributed_images_upstream_bytes",
            "Bytes fetched from upstream registries",
            registry=r,
        )
        self.upstream_requests = Counter(
            "distributed_images_upstream_requests",
            "Requests to upstream registries by status code (error: no answer)",
            ["registry", "code"],
            registry=r,
        )
        self.requests = Counter(
            "distributed_images_requests",
            "Registry API requests served",
            ["endpoint", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "distributed_images_request_duration_seconds",
            "Registry API request duration, to the last byte",
            ["endpoint"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.store_bytes = Gauge(
            "distributed_images_store_bytes", "Bytes of content in the local store", registry=r
        )
        self.evictions = Counter(
            "distributed_images_evictions", "Blobs evicted from the local store", registry=r
        )
        self.downloads_shared = Counter(
            "distributed_images_downloads_joined",
            "Client requests that joined a download already in flight",
            registry=r,
        )
        self.stale_manifests = Counter(
            "distributed_images_stale_manifests_served",
            "Tags served from the cache because the upstream failed",
            registry=r,
        )
        self.swarm_peers = Gauge(
            "distributed_images_swarm_peers",
            "Peer connections open in this node's swarm",
            registry=r,
        )
        self.chunk_duration = Histogram(
            "distributed_images_chunk_duration_seconds",
            "Time to get one chunk of a blob pulled through the cluster, by where it came from",
            ["source"],
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
        )
        self.fallbacks = Counter(
            "distributed_images_fallbacks",
            "Chunks or blobs fetched from upstream because the cluster could not help: a chunk"
            " that stalled, the tracker unreachable, or a blob the cluster gave with bad bytes",
            ["reason"],
            registry=r,
        )
        self.tracker_failover = Histogram(
            "distributed_images_tracker_failover_seconds",
            "Time from this node leaving a tracker replica that failed to its calls being answered"
            " by another, and its task stream and watches open there",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60),
        )
        self.upstream_resumes = Counter(
            "distributed_images_upstream_resumes",
            "Upstream transfers that broke and were resumed from the first byte missing",
            registry=r,
        )
        self.verified_bytes = Counter(
            "distributed_images_verified_bytes",
            "Stored bytes read back and checked against their digests: after an unclean stop"
            " (recovery) or by the background scrub",
            ["reason"],
            registry=r,
        )
        self.damaged_blobs = Counter(
            "distributed_images_damaged_blobs",
            "Stored blobs found damaged and purged, by what found them: the verification after"
            " an unclean stop, the scrub, or a seeded piece failing its hash",
            ["found_by"],
            registry=r,
        )
        self.refetches = Counter(
            "distributed_images_refetches",
            "Damaged blobs fetched again (fetched), imported again from their archive (archive),"
            " whose fetch failed (failed), or left for the next client to ask (on_demand)",
            ["result"],
            registry=r,
        )
        self.uncached_blobs = Counter(
            "distributed_images_uncached_blobs",
            "Blob requests streamed straight from the upstream without being stored, because"
            " the store's disk was full",
            registry=r,
        )
        self.store_errors = Counter(
            "distributed_images_store_errors",
            "Writes the store could not do: the disk was full (disk_full) or read-only"
            " (read_only), or an SQLite statement failed (metadata); clients are served"
            " without them",
            ["kind"],
            registry=r,
        )
        self.access_checks = Counter(
            "distributed_images_access_checks",
            "Upstream requests made to decide who may read what: whether a repository is public,"
            " whether a credential may read it, whether a digest belongs to it",
            ["kind", "result"],
            registry=r,
        )
        self.access_refused = Counter(
            "distributed_images_access_refused",
            "Requests refused by the access checks, by why",
            ["reason"],
            registry=r,
        )
        self.client_connections_shed = Counter(
            "distributed_images_client_connections_shed",
            "Client connections closed at the connection limit: the one idle longest, closed for"
            " a new one (idle), or a new one answered 503 while every one was in a request"
            " (all_busy)",
            ["reason"],
            registry=r,
        )
        self.last_peer_success: float | None = None  # monotonic time a chunk last came from peers
        self.since_peer_success = Gauge(
            "distributed_images_seconds_since_peer_success",
            "Seconds since a chunk last arrived from peers (NaN: never)",
            registry=r,
        )
        self.since_peer_success.set_function(self._since_peer_success)
        for reason in ("stall", "tracker", "corrupt"):
            self.fallbacks.labels(reason)
        for reason in ("recovery", "scrub"):
            self.verified_bytes.labels(reason)
        for found_by in ("recovery", "scrub", "swarm"):
            self.damaged_blobs.labels(found_by)
        for result in ("fetched", "archive", "failed", "on_demand"):
            self.refetches.labels(result)
        for kind in ("disk_full", "read_only", "metadata"):
            self.store_errors.labels(kind)
        for reason in ("idle", "all_busy"):
            self.client_connections_shed.labels(reason)
        for source in ("peer", "upstream"):
            self.chunk_duration.labels(source)
        for source in ("cache", "peer", "upstream", "seed"):
            self.blob_bytes.labels(source)
        for direction in ("download", "upload"):
            self.peer_bytes.labels(direction)

    def _since_peer_success(self) -> float:
        last = self.last_peer_success
        return math.nan if last is None else time.monotonic() - last

    def shed_connection(self, reason: str) -> None:
        self.client_connections_shed.labels(reason).inc()

    def chunk_done(self, source: str, seconds: float) -> None:
        self.chunk_duration.labels(source).observe(seconds)
        if source == "peer":
            self.last_peer_success = time.monotonic()
