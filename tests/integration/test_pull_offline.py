"""A node whose upstream has gone away keeps serving what it holds, and fails fast on the rest."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support import outcome, skopeo
from tests.support.images import OCI_MANIFEST, TestImages, push
from tests.support.node import Node
from tests.support.process import CommandFailed
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

FAST = 6.0  # seconds: "fails fast", against the 30 s upstream timeout and clients' own


@pytest.fixture(scope="module")
def offline_setup(
    node_command: None, workspace: Path, test_images: TestImages
) -> Iterator[tuple[Node, Registry]]:
    """A node that pulled the app image (tag 1), and then lost its upstream, which also held
    the multi-arch image. Shared by this module: no test here changes what the node holds."""
    base = Path(tempfile.mkdtemp(prefix="offline-", dir=workspace))
    doomed = Registry(base / "registry", name="doomed")
    node = Node(base / "node", {doomed.host: doomed.url}, doomed.host)
    try:
        doomed.start()
        push(test_images.app, doomed.host, f"{TestImages.APP}:1")
        push(test_images.multi, doomed.host, f"{TestImages.MULTI}:1")
        node.start()
        skopeo.pull(node.host, f"{TestImages.APP}:1", base / "warmup")
        doomed.stop()
        yield node, doomed
    finally:
        node.stop()
        doomed.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def offline_node(
    offline_setup: tuple[Node, Registry], request: pytest.FixtureRequest
) -> Iterator[Node]:
    node, doomed = offline_setup
    assert not doomed.running
    yield node
    if outcome.failed(request):
        print(node.log_tail())


def test_cached_tag_still_pulls_after_the_upstream_stops(
    offline_node: Node, test_images: TestImages, workdir: Path
) -> None:
    out = skopeo.pull(offline_node.host, f"{TestImages.APP}:1", workdir / "offline")
    assert skopeo.verify_dir(out) == test_images.app.image().blobs
    assert skopeo.manifest_digest(out) == test_images.app.digest


def test_cached_digest_still_pulls_after_the_upstream_stops(
    offline_node: Node, test_images: TestImages, workdir: Path
) -> None:
    reference = f"{TestImages.APP}@{test_images.app.digest}"
    out = skopeo.pull(offline_node.host, reference, workdir / "offline")
    assert skopeo.verify_dir(out) == test_images.app.image().blobs


async def test_uncached_manifest_fails_fast_with_an_oci_error(offline_node: Node) -> None:
    url = f"{offline_node.url}/v2/{TestImages.MULTI}/manifests/1"
    started = time.monotonic()
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Accept": OCI_MANIFEST}) as response,
    ):
        body = await response.json(content_type=None)
        elapsed = time.monotonic() - started
    assert elapsed < FAST, f"took {elapsed:.1f} s"
    assert response.status in (404, 502, 503, 504), (response.status, body)
    assert response.headers["Content-Type"].startswith("application/json")
    errors = body["errors"]
    assert len(errors) == 1 and errors[0]["message"], body
    assert errors[0]["code"] in ("MANIFEST_UNKNOWN", "UNAVAILABLE"), body


async def test_uncached_blob_fails_fast_with_an_oci_error(
    offline_node: Node, test_images: TestImages
) -> None:
    digest = test_images.multi.image().config.digest
    url = f"{offline_node.url}/v2/{TestImages.MULTI}/blobs/{digest}"
    started = time.monotonic()
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        body = await response.json(content_type=None)
        elapsed = time.monotonic() - started
    assert elapsed < FAST, f"took {elapsed:.1f} s"
    assert response.status in (404, 502, 503, 504), (response.status, body)
    assert body["errors"][0]["code"] in ("BLOB_UNKNOWN", "UNAVAILABLE"), body


def test_skopeo_pull_of_an_uncached_tag_fails_fast(offline_node: Node, workdir: Path) -> None:
    started = time.monotonic()
    with pytest.raises(CommandFailed):
        skopeo.pull(offline_node.host, f"{TestImages.MULTI}:1", workdir / "out", arch="amd64")
    assert time.monotonic() - started < FAST + 5.0  # skopeo's own start and retries
