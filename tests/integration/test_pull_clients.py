"""Real clients pull real images through a real node, which fetches them from a real registry."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import rawhttp, skopeo
from tests.support.containerd import Containerd, write_hosts_toml
from tests.support.images import OCI_INDEX, OCI_MANIFEST, DockerPush, TestImages
from tests.support.node import Node
from tests.support.podman import Podman
from tests.support.process import free_port
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


@pytest.fixture
def ns_node(node_factory: Callable[..., Node], upstream: Registry) -> Node:
    """A node whose default registry is a dead port: only requests that carry ?ns= (and so are
    routed by it) can reach the real upstream."""
    dead = f"127.0.0.1:{free_port()}"
    return node_factory({upstream.host: upstream.url, dead: f"http://{dead}"}, dead)


def _client_requests(upstream: Registry, since: int, agent: str) -> list[str]:
    """Requests a client sent to the upstream itself: a pull that bypassed the node."""
    return [e.uri for e in upstream.entries(since) if agent in e.user_agent.lower()]


def test_skopeo_pulls_an_image_through_the_node(
    node: Node, upstream: Registry, test_images: TestImages, workdir: Path
) -> None:
    image = test_images.app.image()
    mark = upstream.mark()
    out = skopeo.pull(node.host, f"{test_images.APP}:1", workdir / "out")
    assert skopeo.verify_dir(out) == image.blobs
    assert skopeo.manifest_digest(out) == image.digest
    for digest in image.blobs:
        assert upstream.blob_fetches(digest, since=mark), f"{digest} never fetched upstream"
    assert node.metric("distributed_images_blob_bytes_total") == image.blob_bytes


def test_skopeo_pulls_a_64_mib_layer_spanning_many_chunks(
    node: Node, upstream: Registry, test_images: TestImages, workdir: Path
) -> None:
    image = test_images.big.image()
    big = test_images.big.largest_layer()
    assert big.size > 64 * 1024 * 1024
    mark = upstream.mark()
    out = skopeo.pull(node.host, f"{test_images.BIG}:1", workdir / "cold")
    assert skopeo.verify_dir(out) == image.blobs
    assert sum(f.written for f in upstream.blob_fetches(big.digest, since=mark)) == big.size
    # Warm: served from the node's store, byte for byte, with no upstream blob traffic.
    mark = upstream.mark()
    warm = skopeo.pull(node.host, f"{test_images.BIG}:1", workdir / "warm")
    assert skopeo.verify_dir(warm) == image.blobs
    assert upstream.blob_fetches(big.digest, since=mark) == []


@pytest.mark.parametrize("architecture", ["amd64", "arm64"])
def test_skopeo_pulls_each_platform_of_a_multi_arch_index(
    node: Node, test_images: TestImages, workdir: Path, architecture: str
) -> None:
    image = test_images.multi.image(architecture)
    out = skopeo.pull(node.host, f"{test_images.MULTI}:1", workdir / "out", arch=architecture)
    assert skopeo.verify_dir(out) == image.blobs
    assert skopeo.manifest_digest(out) == image.digest


def test_skopeo_pulls_an_index_and_a_manifest_by_digest(
    node: Node, test_images: TestImages, workdir: Path
) -> None:
    index = test_images.multi
    arm = index.image("arm64")
    by_index = skopeo.pull(
        node.host, f"{test_images.MULTI}@{index.digest}", workdir / "index", arch="arm64"
    )
    assert skopeo.verify_dir(by_index) == arm.blobs
    assert skopeo.manifest_digest(by_index) == arm.digest
    amd = index.image("amd64")
    by_manifest = skopeo.pull(node.host, f"{test_images.MULTI}@{amd.digest}", workdir / "manifest")
    assert skopeo.verify_dir(by_manifest) == amd.blobs


def _containerd_pull(
    containerd: Containerd,
    node: Node,
    upstream: Registry,
    workdir: Path,
    repository: str,
    platform: str | None = None,
) -> str:
    """Pull `<upstream>/<repository>:1` with the node as the registry's mirror in hosts.toml;
    containerd itself must send nothing to the upstream. Returns the reference pulled."""
    hosts = workdir / "certs.d"
    write_hosts_toml(hosts, upstream.host, server=upstream.url, mirror=node.url)
    reference = f"{upstream.host}/{repository}:1"
    mark = upstream.mark()
    containerd.pull(reference, hosts, platform=platform)
    assert _client_requests(upstream, mark, "containerd") == []
    return reference


def test_containerd_pulls_through_the_node_with_ns(
    ns_node: Node,
    upstream: Registry,
    containerd: Containerd,
    test_images: TestImages,
    workdir: Path,
) -> None:
    reference = _containerd_pull(containerd, ns_node, upstream, workdir, test_images.BIG)
    assert containerd.image_digest(reference) == test_images.big.digest
    for digest, size in test_images.big.image().blobs.items():
        containerd.verify_content(digest, size)
    # containerd named the registry in ?ns=, and the node counted those requests.
    assert ns_node.metric("distributed_images_requests_total", endpoint="blob", code="200") >= 2
    assert (
        ns_node.metric("distributed_images_blob_bytes_total") == test_images.big.image().blob_bytes
    )


def test_containerd_pulls_a_multi_arch_image_by_platform(
    ns_node: Node,
    upstream: Registry,
    containerd: Containerd,
    test_images: TestImages,
    workdir: Path,
) -> None:
    reference = _containerd_pull(
        containerd, ns_node, upstream, workdir, test_images.MULTI, platform="linux/arm64"
    )
    assert containerd.image_digest(reference) == test_images.multi.digest
    for digest, size in test_images.multi.image("arm64").blobs.items():
        containerd.verify_content(digest, size)


def test_podman_pulls_through_the_node_as_a_mirror_without_ns(
    node: Node, upstream: Registry, podman: Podman, test_images: TestImages
) -> None:
    podman.configure(location=upstream.host, mirror=node.host)
    mark = upstream.mark()
    podman.pull(f"{test_images.APP}:1")
    # podman's user agent is containers/image's: "containers/5.23.1 (github.com/...)".
    assert _client_requests(upstream, mark, "containers/") == []
    info = podman.inspect(f"{test_images.APP}:1")
    image = test_images.app.image()
    assert info["Digest"] == image.digest
    assert info["RootFS"] == {"Type": "layers", "Layers": list(image.diff_ids)}
    assert node.metric("distributed_images_blob_bytes_total") == image.blob_bytes


# Docker schema 2: what most registries (Docker Hub among them) serve.


@pytest.mark.parametrize("architecture", ["amd64", "arm64"])
def test_skopeo_pulls_a_docker_manifest_list_through_the_node(
    node: Node,
    docker_image: DockerPush,
    test_images: TestImages,
    workdir: Path,
    architecture: str,
) -> None:
    out = skopeo.pull(node.host, docker_image.reference, workdir / "out", arch=architecture)
    assert skopeo.verify_dir(out) == test_images.docker.image(architecture).blobs
    assert skopeo.manifest_digest(out) == docker_image.manifests[architecture]


def test_containerd_pulls_a_docker_manifest_list_by_platform(
    ns_node: Node,
    upstream: Registry,
    containerd: Containerd,
    docker_image: DockerPush,
    test_images: TestImages,
    workdir: Path,
) -> None:
    hosts = workdir / "certs.d"
    write_hosts_toml(hosts, upstream.host, server=upstream.url, mirror=ns_node.url)
    reference = f"{upstream.host}/{docker_image.reference}"
    mark = upstream.mark()
    containerd.pull(reference, hosts, platform="linux/arm64")
    assert _client_requests(upstream, mark, "containerd") == []
    assert containerd.image_digest(reference) == docker_image.digest
    for digest, size in test_images.docker.image("arm64").blobs.items():
        containerd.verify_content(digest, size)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (f"{DOCKER_LIST}, {DOCKER_MANIFEST}", DOCKER_LIST),
        (f"{OCI_INDEX}, {DOCKER_LIST}, {OCI_MANIFEST}", DOCKER_LIST),
    ],
)
async def test_manifest_list_is_served_with_its_own_type_and_digest(
    node: Node, docker_image: DockerPush, accept: str, expected: str
) -> None:
    name, _, tag = docker_image.reference.partition(":")
    response = await rawhttp.request(
        node.host, "GET", f"/v2/{name}/manifests/{tag}", {"Accept": accept}
    )
    assert response.status == 200, response
    assert response.headers["Content-Type"] == expected
    assert response.headers["Docker-Content-Digest"] == docker_image.digest
    assert "sha256:" + hashlib.sha256(response.body).hexdigest() == docker_image.digest
    by_digest = await rawhttp.request(
        node.host,
        "GET",
        f"/v2/{name}/manifests/{docker_image.manifests['amd64']}",
        {"Accept": DOCKER_MANIFEST},
    )
    assert by_digest.status == 200, by_digest
    assert by_digest.headers["Content-Type"] == DOCKER_MANIFEST
    assert "sha256:" + hashlib.sha256(by_digest.body).hexdigest() == docker_image.manifests["amd64"]
