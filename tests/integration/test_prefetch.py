"""Prefetch: an image manifest served to a client brings the blobs it names in before the client
asks for them (judged from the upstream's own access log), and the client's pull then takes
nothing more from upstream."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import rawhttp, skopeo
from tests.support.images import OCI_INDEX, OCI_MANIFEST, TestImages
from tests.support.node import Node
from tests.support.process import wait_until
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

ACCEPT = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
QUIET = 1.5  # seconds in which a node that would prefetch has asked upstream for a blob


def fetched(upstream: Registry, since: int) -> dict[str, int]:
    """Bytes the upstream wrote per blob digest since `since`."""
    found: dict[str, int] = {}
    for entry in upstream.entries(since):
        if entry.method == "GET" and entry.is_blob():
            digest = entry.path.rsplit("/", 1)[-1]
            found[digest] = found.get(digest, 0) + entry.written
    return found


def wait_fetched(upstream: Registry, since: int, wanted: dict[str, int], what: str) -> None:
    wait_until(
        lambda: fetched(upstream, since) == wanted,
        30,
        what,
        on_timeout=lambda: f"fetched {fetched(upstream, since)}, wanted {wanted}",
    )


async def get_manifest(node: Node, repository: str, reference: str) -> None:
    response = await rawhttp.request(
        node.host, "GET", f"/v2/{repository}/manifests/{reference}", ACCEPT
    )
    assert response.status == 200, response


async def test_a_served_manifest_brings_its_blobs_in_before_the_client_asks(
    node: Node, upstream: Registry, test_images: TestImages, workdir: Path
) -> None:
    image = test_images.app.image()
    mark = upstream.mark()
    await get_manifest(node, TestImages.APP, TestImages.TAG)
    wait_fetched(upstream, mark, image.blobs, "every blob fetched from upstream, whole and once")

    pulled = upstream.mark()
    skopeo.pull(node.host, f"{TestImages.APP}:1", workdir / "out")
    assert fetched(upstream, pulled) == {}
    # The client's first read of a prefetched blob counts where its bytes came from.
    metrics = node.metrics()
    assert metrics.sum("distributed_images_blob_bytes_total", source="upstream") == image.blob_bytes
    assert metrics.sum("distributed_images_blob_bytes_total", source="cache") == 0


async def test_an_index_prefetches_only_the_platform_manifest_the_client_picks(
    node: Node, upstream: Registry, test_images: TestImages
) -> None:
    multi = test_images.multi
    mark = upstream.mark()
    await get_manifest(node, TestImages.MULTI, TestImages.TAG)
    time.sleep(QUIET)
    assert fetched(upstream, mark) == {}

    amd64 = multi.image("amd64")
    await get_manifest(node, TestImages.MULTI, amd64.digest)
    wait_fetched(upstream, mark, amd64.blobs, "the amd64 image's blobs fetched from upstream")
    time.sleep(QUIET)
    assert fetched(upstream, mark) == amd64.blobs  # and nothing of arm64's


async def test_prefetch_zero_fetches_only_what_clients_ask_for(
    node_factory: Callable[..., Node], upstream: Registry, test_images: TestImages
) -> None:
    registries = {upstream.host: upstream.url}
    node = node_factory(registries, upstream.host, extra_args=["--prefetch", "0"])
    image = test_images.app.image()
    mark = upstream.mark()
    await get_manifest(node, TestImages.APP, TestImages.TAG)
    time.sleep(QUIET)
    assert fetched(upstream, mark) == {}

    layer = image.layers[0]
    response = await rawhttp.request(node.host, "GET", f"/v2/{TestImages.APP}/blobs/{layer.digest}")
    assert response.status == 200 and len(response.body) == layer.size
    assert fetched(upstream, mark) == {layer.digest: layer.size}
