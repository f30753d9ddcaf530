"""Prefetch: once a client asks for a layer of an image manifest it was served, the image's other
layers and its config come in before the client asks for them (judged from the upstream's own
access log), and the client's pull then takes nothing more from upstream. A manifest and config
alone, as inspecting tools read them, bring nothing in."""

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


async def get(node: Node, path: str, headers: dict[str, str] | None = None) -> bytes:
    response = await rawhttp.request(node.host, "GET", path, headers)
    assert response.status == 200, response
    return response.body


async def inspect(node: Node, repository: str, reference: str, config: str) -> None:
    """What `skopeo inspect` reads: the manifest and the config."""
    await get(node, f"/v2/{repository}/manifests/{reference}", ACCEPT)
    await get(node, f"/v2/{repository}/blobs/{config}")


async def test_a_pull_s_first_layer_brings_the_others_in_before_the_client_asks(
    node: Node, upstream: Registry, test_images: TestImages, workdir: Path
) -> None:
    image = test_images.app.image()
    first = image.layers[0]
    mark = upstream.mark()
    await inspect(node, TestImages.APP, TestImages.TAG, image.config.digest)
    time.sleep(QUIET)
    assert fetched(upstream, mark) == {image.config.digest: image.config.size}

    assert len(await get(node, f"/v2/{TestImages.APP}/blobs/{first.digest}")) == first.size
    wait_fetched(upstream, mark, image.blobs, "every blob fetched from upstream, whole and once")
    pulled = upstream.mark()
    skopeo.pull(node.host, f"{TestImages.APP}:1", workdir / "out")
    assert fetched(upstream, pulled) == {}
    # The client's first read of a prefetched layer counts where its bytes came from; what was
    # read before (config and first layer, by hand) is read from the cache the second time.
    metrics = node.metrics()
    by_source = {
        source: metrics.sum("distributed_images_blob_bytes_total", source=source)
        for source in ("upstream", "cache")
    }
    assert by_source == {"upstream": image.blob_bytes, "cache": first.size + image.config.size}


async def test_an_index_prefetches_only_the_platform_the_client_pulls(
    node: Node, upstream: Registry, test_images: TestImages
) -> None:
    amd64 = test_images.multi.image("amd64")
    first = amd64.layers[0]
    mark = upstream.mark()
    await get(node, f"/v2/{TestImages.MULTI}/manifests/{TestImages.TAG}", ACCEPT)
    await get(node, f"/v2/{TestImages.MULTI}/manifests/{amd64.digest}", ACCEPT)
    await get(node, f"/v2/{TestImages.MULTI}/blobs/{first.digest}")
    wanted = {blob.digest: blob.size for blob in (amd64.config, *amd64.layers)}
    wait_fetched(upstream, mark, wanted, "the amd64 image's config and layers from upstream")
    time.sleep(QUIET)
    assert fetched(upstream, mark) == wanted  # nothing of arm64's


async def test_prefetch_zero_fetches_only_what_clients_ask_for(
    node_factory: Callable[..., Node], upstream: Registry, test_images: TestImages
) -> None:
    registries = {upstream.host: upstream.url}
    node = node_factory(registries, upstream.host, extra_args=["--prefetch", "0"])
    image = test_images.app.image()
    layer = image.layers[0]
    mark = upstream.mark()
    await get(node, f"/v2/{TestImages.APP}/manifests/{TestImages.TAG}", ACCEPT)
    assert len(await get(node, f"/v2/{TestImages.APP}/blobs/{layer.digest}")) == layer.size
    time.sleep(QUIET)
    assert fetched(upstream, mark) == {layer.digest: layer.size}
