"""An upstream registry is trusted for nothing but what its digests prove (DESIGN section 10):
whatever it answers, the node reaches no address the operator did not allow, serves and keeps
nothing that is not a manifest or a verified blob, and answers its client with one clear error.

The hostile upstream is operator-configured on 127.0.0.3, so the node may reach 127.0.0.3; the
"loopback-only service" it points the node at listens on 127.0.0.1, where `localhost` resolves,
and stands for any address only the node's host or network can reach (a metadata endpoint, an
admin API)."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support import rawhttp
from tests.support.fakeupstream import FakeBlob, FakeManifest, FakeUpstream
from tests.support.images import OCI_INDEX, OCI_MANIFEST
from tests.support.node import Node

pytestmark = pytest.mark.integration

REPO = "test/hostile"


@pytest.fixture
def hostile() -> Iterator[FakeUpstream]:
    server = FakeUpstream(host="127.0.0.3")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def service(fake_upstream: FakeUpstream) -> FakeUpstream:
    """A service on 127.0.0.1 that records whether anybody reached it."""
    return fake_upstream


@pytest.fixture
def hostile_node(node_factory: Callable[..., Node], hostile: FakeUpstream) -> Node:
    return node_factory({hostile.host: hostile.url}, hostile.host)


def _blob(seed: str, size: int = 300_000) -> FakeBlob:
    return FakeBlob(random.Random(seed).randbytes(size))


def _codes(response: rawhttp.RawResponse) -> list[str]:
    return [e["code"] for e in response.json()["errors"]]  # type: ignore[index]


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1:{port}/latest/meta-data/",
        "http://localhost:{port}/latest/meta-data/",  # a name: loopback once resolved
        "http://[::ffff:127.0.0.1]:{port}/latest/meta-data/",
    ],
)
async def test_a_redirect_to_an_address_the_node_may_not_reach_is_not_followed(
    hostile_node: Node, hostile: FakeUpstream, service: FakeUpstream, location: str
) -> None:
    blob = _blob("redirected")
    digest = hostile.add(blob)
    hostile.redirect(digest, location.format(port=service.url.rpartition(":")[2]))
    response = await rawhttp.request(hostile_node.host, "GET", f"/v2/{REPO}/blobs/{digest}")
    assert response.status == 502, response
    assert _codes(response) == ["UNAVAILABLE"]
    assert b"secret-of-the-service" not in response.body
    assert service.requests() == []
    assert hostile.blob_gets(digest), "the upstream was asked and answered a redirect"
    assert len(hostile.blob_gets(digest)) <= 2  # refused at once, not retried
    assert hostile_node.stored_paths(digest) == []
    assert "refusing an upstream connection" in hostile_node.log_path.read_text()


async def test_a_token_service_at_an_address_the_node_may_not_reach_is_not_asked(
    hostile_node: Node, hostile: FakeUpstream, service: FakeUpstream
) -> None:
    hostile.challenge(f"{service.url}/token")
    response = await rawhttp.request(hostile_node.host, "GET", f"/v2/{REPO}/manifests/1")
    assert response.status == 502, response
    assert service.requests() == []
    assert [r.path for r in hostile.requests()] == [f"/v2/{REPO}/manifests/1"]


async def test_a_network_the_operator_allows_is_reached(
    node_factory: Callable[..., Node], hostile: FakeUpstream, service: FakeUpstream
) -> None:
    """`--private-upstream-networks`: a private registry's blob storage on another address."""
    node = node_factory(
        {hostile.host: hostile.url},
        hostile.host,
        extra_args=["--private-upstream-networks", "127.0.0.1/32"],
    )
    blob = _blob("allowed")
    digest = service.add(blob)
    hostile.add(blob)  # the registry knows the blob (a HEAD answers); a GET goes to its storage
    hostile.redirect(digest, f"{service.url}/v2/{REPO}/blobs/{digest}")
    url = f"{node.url}/v2/{REPO}/blobs/{digest}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        body = await response.read()
    assert hashlib.sha256(body).hexdigest() == digest.removeprefix("sha256:")
    assert service.blob_gets(digest)


# -- manifests


def _manifest(document: object, media_type: str = OCI_MANIFEST) -> FakeManifest:
    return FakeManifest(json.dumps(document).encode(), media_type)


NOT_MANIFESTS = {
    "an HTML page": FakeManifest(b"<html><body>Service Unavailable</body></html>", "text/html"),
    "schema 1": _manifest(
        {"schemaVersion": 1, "name": "x", "fsLayers": []},
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ),
    "an index without manifests": _manifest(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "layers": []}, OCI_INDEX
    ),
    "a bad descriptor": _manifest(
        {"schemaVersion": 2, "config": {"digest": "../../etc", "size": 1}, "layers": []}
    ),
    "JSON nested too deep": FakeManifest(b"[" * 200_000 + b"]" * 200_000, OCI_MANIFEST),
}


@pytest.mark.parametrize("what", sorted(NOT_MANIFESTS))
async def test_what_is_not_a_manifest_is_neither_served_nor_kept(
    hostile_node: Node, hostile: FakeUpstream, what: str
) -> None:
    manifest = NOT_MANIFESTS[what]
    hostile.add_manifest(REPO, "1", manifest)
    for tries in (1, 2):
        for reference in ("1", manifest.digest):
            response = await rawhttp.request(
                hostile_node.host, "GET", f"/v2/{REPO}/manifests/{reference}"
            )
            assert response.status == 502, response
            assert _codes(response) == ["MANIFEST_INVALID"]
        # Nothing kept: the second try asks the upstream again (a HEAD may come first, to check
        # access: only the bodies count).
        gets = [r for r in hostile.requests() if "/manifests/" in r.path and r.method == "GET"]
        assert len(gets) == 2 * tries
    assert hostile_node.stored_paths(manifest.digest) == []


async def test_a_manifest_without_end_is_cut_at_the_manifest_size_limit(
    hostile_node: Node, hostile: FakeUpstream
) -> None:
    hostile.add_endless_manifest(REPO, "endless")
    response = await rawhttp.request(hostile_node.host, "GET", f"/v2/{REPO}/manifests/endless")
    assert response.status == 502, response
    assert _codes(response) == ["MANIFEST_INVALID"]
    gets = [r for r in hostile.requests() if r.path.endswith("/endless") and r.method == "GET"]
    assert len(gets) == 1
    assert _peak_rss(hostile_node) < 300 << 20
    alive = await rawhttp.request(hostile_node.host, "GET", "/v2/")
    assert alive.status == 200


def _peak_rss(node: Node) -> int:
    """The node process's peak resident memory, in bytes (VmHWM)."""
    for line in Path(f"/proc/{node.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")
