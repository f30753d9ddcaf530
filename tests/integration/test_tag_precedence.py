"""What a tag means: its upstream's answer, or on the node holding the archive its images
directory; a tag seeded by another node only when the upstream does not answer for it, and then
never remembered as the tag's value. Tried with a real tracker, real nodes and a real upstream
whose access log shows what was asked of it."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from node.store.metadata import Metadata
from tests.integration.conftest import P2PImages
from tests.support import images
from tests.support.cluster import Cluster
from tests.support.images import OCI_MANIFEST, KiB, LayerSpec, OciImage
from tests.support.node import Node
from tests.support.process import run
from tests.support.registry import Registry
from tracker.client import NodeAddress, SeededRef, TrackerClient
from tracker.credentials import Role
from tracker.errors import PermissionDenied

pytestmark = pytest.mark.integration

SEEDED_WITHIN = 30.0


def forged_archive(directory: Path, name: str) -> OciImage:
    """An archive naming `name` (registry/repository:tag) that holds an image of its own."""
    image = images.build_image(directory / "layout", "1", [LayerSpec(64 * KiB)], seed="forged")
    archive = f"oci-archive:{directory / 'images' / 'forged.tar'}:{name}"
    (directory / "images").mkdir(parents=True)
    copy = ["skopeo", "copy", "--quiet", "--preserve-digests"]
    run([*copy, f"oci:{image.layout}:1", archive], timeout=120)
    return image


async def until_resolved(cluster: Cluster, ref: str, digest: str) -> None:
    """Until the tracker names `digest` for `ref`, as node1 would ask it."""
    client = TrackerClient(
        cluster.tracker.address, credential=cluster.tracker.credential(Role.NODE, "node1")
    )
    deadline = time.monotonic() + SEEDED_WITHIN
    try:
        while digest not in (found := [r.digest for r in await client.resolve(ref, "node1")]):
            assert time.monotonic() < deadline, f"the tracker resolved {ref} to {found}"
            await asyncio.sleep(0.2)
    finally:
        await client.close()


async def manifest(node: Node, repository: str, tag: str) -> tuple[int, str]:
    """The status and the sha256 of the manifest a client receives for `repository:tag`."""
    url = f"{node.url}/v2/{repository}/manifests/{tag}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Accept": OCI_MANIFEST}) as response,
    ):
        body = await response.read()
    return response.status, "sha256:" + hashlib.sha256(body).hexdigest()


def remembered(node: Node, upstream: Registry, repository: str, tag: str) -> str | None:
    """The digest the node's store holds as the tag's value (its stale-if-error answer)."""
    metadata = Metadata(node.data_dir / "metadata.sqlite")
    try:
        record = metadata.tag(upstream.host, repository, tag)
    finally:
        metadata.close()
    return record.digest if record else None


async def test_a_tag_its_upstream_serves_is_never_answered_by_another_nodes_seed(
    start_cluster: Callable[..., Cluster],
    p2p_upstream: Registry,
    p2p_images: P2PImages,
    tmp_path: Path,
) -> None:
    repository, _, tag = P2PImages.SMALL.rpartition(":")
    ref = f"{p2p_upstream.host}/{P2PImages.SMALL}"
    forged = forged_archive(tmp_path, ref)
    cluster = start_cluster(
        size=2, node_args={0: ["--images-dir", str(tmp_path / "images")]}, seeders=[0]
    )
    seeder, other = cluster.nodes
    await until_resolved(cluster, ref, forged.digest)

    mark = p2p_upstream.mark()
    assert await manifest(other, repository, tag) == (200, p2p_images.small.digest)
    asked = [e for e in p2p_upstream.manifest_requests(tag, since=mark) if repository in e.path]
    assert asked, "the upstream was never asked"
    assert remembered(other, p2p_upstream, repository, tag) == p2p_images.small.digest
    # On the node holding the archive, its images directory comes first (--seed-precedence).
    assert await manifest(seeder, repository, tag) == (200, forged.digest)


async def test_a_node_without_the_seeder_role_cannot_announce_a_tag(
    start_cluster: Callable[..., Cluster],
    p2p_upstream: Registry,
    p2p_images: P2PImages,
) -> None:
    repository, _, tag = P2PImages.SMALL.rpartition(":")
    cluster = start_cluster(size=1)
    mallory = TrackerClient(
        cluster.tracker.address, credential=cluster.tracker.credential(Role.NODE, "mallory")
    )
    ref = f"{p2p_upstream.host}/{P2PImages.SMALL}"
    try:
        await mallory.join(NodeAddress("mallory", "127.0.0.66:8080", "127.0.0.66:6881"), "i")
        with pytest.raises(PermissionDenied):
            await mallory.announce("mallory", [], [SeededRef(ref, "sha256:" + "6" * 64)])
        assert await mallory.resolve(ref, "mallory") == []
    finally:
        await mallory.close()
    assert await manifest(cluster.nodes[0], repository, tag) == (200, p2p_images.small.digest)


async def test_a_tag_its_upstream_does_not_have_comes_from_a_seeder_and_is_not_remembered(
    start_cluster: Callable[..., Cluster],
    p2p_upstream: Registry,
    tmp_path: Path,
) -> None:
    repository, tag = "p2p/seeded-only", "1"
    ref = f"{p2p_upstream.host}/{repository}:{tag}"
    seeded = forged_archive(tmp_path, ref)
    cluster = start_cluster(
        size=2, node_args={0: ["--images-dir", str(tmp_path / "images")]}, seeders=[0]
    )
    other = cluster.nodes[1]
    await until_resolved(cluster, ref, seeded.digest)

    mark = p2p_upstream.mark()
    assert await manifest(other, repository, tag) == (200, seeded.digest)
    asked = [e for e in p2p_upstream.manifest_requests(tag, since=mark) if repository in e.path]
    assert asked and {e.status for e in asked} == {404}, "the upstream was asked, had no such tag"
    assert remembered(other, p2p_upstream, repository, tag) is None
