"""A node mirrors only the registries it is configured for. Any other `ns` is answered 404
NAME_UNKNOWN without the node connecting anywhere, and real clients then pull from the registry
itself: containerd falls back to the `server` of its hosts.toml, podman to the registry's
`location`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import rawhttp
from tests.support.containerd import Containerd, write_hosts_toml
from tests.support.fakeupstream import FakeUpstream
from tests.support.images import OCI_MANIFEST, TestImages
from tests.support.node import Node
from tests.support.podman import Podman
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

APP = TestImages.APP
ZERO_DIGEST = "sha256:" + "0" * 64


@pytest.fixture
def empty_node(node_factory: Callable[..., Node], fake_upstream: FakeUpstream) -> Node:
    """A node that mirrors one registry, which holds nothing, and no public registry."""
    return node_factory(
        {fake_upstream.host: fake_upstream.url},
        fake_upstream.host,
        extra_args=["--public-registries", ""],
    )


def _not_mirrored(response: rawhttp.RawResponse) -> None:
    assert response.status == 404, response
    if response.body:
        errors = response.json()["errors"]  # type: ignore[index]
        assert [e["code"] for e in errors] == ["NAME_UNKNOWN"], errors


# Names that resolve without DNS, should a regression make the node look them up.
@pytest.mark.parametrize("ns", ["127.0.0.1:{port}", "localhost:{port}", "127.0.0.2:{port}"])
async def test_a_registry_the_node_does_not_mirror_is_answered_404_and_never_contacted(
    empty_node: Node, fake_upstream: FakeUpstream, upstream: Registry, ns: str
) -> None:
    ns = ns.format(port=upstream.host.rpartition(":")[2])  # a registry that is really there
    mark = upstream.mark()
    for method, target in [
        ("GET", f"/v2/{APP}/manifests/1"),
        ("HEAD", f"/v2/{APP}/manifests/1"),
        ("GET", f"/v2/{APP}/blobs/{ZERO_DIGEST}"),
        ("HEAD", f"/v2/{APP}/blobs/{ZERO_DIGEST}"),
    ]:
        response = await rawhttp.request(
            empty_node.host, method, f"{target}?ns={ns}", {"Accept": OCI_MANIFEST}
        )
        _not_mirrored(response)
    assert upstream.entries(mark) == []
    assert fake_upstream.requests() == []
    metrics = empty_node.metrics()
    assert metrics.sum("distributed_images_upstream_requests_total") == 0
    assert not [key for key in metrics if ns in key]


def test_containerd_pulls_a_registry_the_node_does_not_mirror_from_the_registry_itself(
    empty_node: Node,
    upstream: Registry,
    containerd: Containerd,
    test_images: TestImages,
    workdir: Path,
) -> None:
    hosts = workdir / "certs.d"
    write_hosts_toml(hosts, upstream.host, server=upstream.url, mirror=empty_node.url)
    reference = f"{upstream.host}/{APP}:1"
    mark = upstream.mark()
    containerd.pull(reference, hosts)
    image = test_images.app.image()
    assert containerd.image_digest(reference) == test_images.app.digest
    for digest, size in image.blobs.items():
        containerd.verify_content(digest, size)
        fetched = [e for e in upstream.blob_fetches(digest, since=mark)]
        assert [e.status for e in fetched] == [200]
        assert "containerd" in fetched[0].user_agent.lower()
    # containerd asked the node first, for the manifest and for each blob, and was told 404.
    requests = empty_node.metrics()
    assert requests.sum("distributed_images_requests_total", endpoint="manifest", code="404") >= 1
    assert requests.sum("distributed_images_requests_total", endpoint="blob", code="404") >= 1
    assert requests.sum("distributed_images_upstream_requests_total") == 0
    assert [p for d in image.blobs for p in empty_node.stored_paths(d)] == []


def test_podman_pulls_from_the_registry_itself_what_its_mirror_answers_404_for(
    empty_node: Node, upstream: Registry, podman: Podman, test_images: TestImages
) -> None:
    """podman names no registry to its mirror: the node answers for its default registry, which
    does not have the image; podman then goes to the registry's own location."""
    podman.configure(location=upstream.host, mirror=empty_node.host)
    mark = upstream.mark()
    podman.pull(f"{APP}:1")
    assert podman.inspect(f"{APP}:1")["Digest"] == test_images.app.image().digest
    assert [e for e in upstream.entries(mark) if "containers/" in e.user_agent.lower()]
    metrics = empty_node.metrics()
    assert metrics.sum("distributed_images_requests_total", endpoint="manifest", code="404") >= 1
