"""The node's /metrics tell where the bytes of a pull came from (names: DESIGN section 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import skopeo
from tests.support.images import TestImages
from tests.support.node import Node
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

BLOB_BYTES = "distributed_images_blob_bytes_total"
UPSTREAM_BYTES = "distributed_images_upstream_bytes_total"
MANIFEST_SLACK = 64 * 1024  # manifests, and whatever else a node fetches besides blobs


def test_cold_then_warm_pull_counts_upstream_then_cache_bytes(
    node: Node, upstream: Registry, test_images: TestImages, workdir: Path
) -> None:
    image = test_images.app.image()
    before = node.metrics()
    assert before.sum(BLOB_BYTES) == 0
    assert before.sum(UPSTREAM_BYTES) == 0

    mark = upstream.mark()
    skopeo.pull(node.host, f"{TestImages.APP}:1", workdir / "cold")
    cold = node.metrics()
    egress = upstream.blob_bytes_written(since=mark)
    assert egress == image.blob_bytes
    assert cold.sum(BLOB_BYTES, source="upstream") == image.blob_bytes
    assert cold.sum(BLOB_BYTES, source="cache") == 0
    assert image.blob_bytes <= cold.sum(UPSTREAM_BYTES) <= image.blob_bytes + MANIFEST_SLACK
    upstream_requests = cold.sum("distributed_images_upstream_requests_total")
    assert upstream_requests >= len(image.blobs) + 1

    mark = upstream.mark()
    skopeo.pull(node.host, f"{TestImages.APP}:1", workdir / "warm")
    warm = node.metrics()
    assert upstream.blob_bytes_written(since=mark) == 0
    assert warm.sum(BLOB_BYTES, source="cache") == image.blob_bytes
    assert warm.sum(BLOB_BYTES, source="upstream") == image.blob_bytes
    assert warm.sum(UPSTREAM_BYTES) - cold.sum(UPSTREAM_BYTES) <= MANIFEST_SLACK
    assert warm.sum("distributed_images_store_bytes") >= image.blob_bytes


def test_request_metrics_are_labelled_by_route_not_path(
    node: Node, test_images: TestImages, workdir: Path
) -> None:
    skopeo.pull(node.host, f"{TestImages.APP}:1", workdir / "out")
    metrics = node.metrics()
    endpoints = {
        key.split('endpoint="')[1].split('"')[0]
        for key in metrics
        if key.startswith("distributed_images_requests_total{")
    }
    assert len(endpoints) >= 2, endpoints  # at least manifests and blobs
    assert not any("/" in endpoint or "sha256" in endpoint for endpoint in endpoints), endpoints
    requests = metrics.sum("distributed_images_requests_total")
    assert requests >= len(test_images.app.image().blobs) + 1
    assert metrics.sum("distributed_images_request_duration_seconds_count") >= requests
