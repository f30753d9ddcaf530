"""An upstream registry is trusted for nothing but what its digests prove (DESIGN section 10):
whatever it answers, the node reaches no address the operator did not allow, serves and keeps
nothing that is not a manifest or a verified blob, and answers its client with one clear error.

The hostile upstream is operator-configured on 127.0.0.3, so the node may reach 127.0.0.3; the
"loopback-only service" it points the node at listens on 127.0.0.1, where `localhost` resolves,
and stands for any address only the node's host or network can reach (a metadata endpoint, an
admin API)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support import outcome, rawhttp
from tests.support.cluster import Cluster, until
from tests.support.fakeupstream import FakeBlob, FakeManifest, FakeUpstream
from tests.support.images import OCI_INDEX, OCI_MANIFEST
from tests.support.node import Node

pytestmark = pytest.mark.integration

REPO = "test/hostile"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


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


LOCATIONS = [
    "http://127.0.0.1:{port}/latest/meta-data/",
    "http://localhost:{port}/latest/meta-data/",  # a name: loopback once resolved
    "http://[::ffff:127.0.0.1]:{port}/latest/meta-data/",
]


@pytest.mark.parametrize("location", LOCATIONS)
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


@pytest.mark.parametrize("location", LOCATIONS)
async def test_a_manifest_redirected_to_an_address_the_node_may_not_reach_is_not_fetched(
    hostile_node: Node, hostile: FakeUpstream, service: FakeUpstream, location: str
) -> None:
    """The attack as it was first tried: the body of a loopback-only service answered as the
    manifest of a tag."""
    hostile.redirect_manifest(REPO, "1", location.format(port=service.url.rpartition(":")[2]))
    response = await rawhttp.request(hostile_node.host, "GET", f"/v2/{REPO}/manifests/1")
    assert response.status == 502, response
    assert _codes(response) == ["UNAVAILABLE"]
    assert b"secret-of-the-service" not in response.body
    assert service.requests() == []
    gets = [r for r in hostile.requests() if r.method == "GET" and "/manifests/" in r.path]
    assert 1 <= len(gets) <= 2  # refused at once, not retried
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


# -- sizes: what a manifest or an upstream declares


LAYER = 6 * 1024 * 1024 + 12345  # two chunks, the second partial
HUGE = 1 << 44


@pytest.fixture
def hostile_cluster(
    workdir: Path, hostile: FakeUpstream, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    """A tracker and one node, mirroring the hostile upstream: cold blobs are pulled through
    the cluster, chunk by chunk, as on any clustered node."""
    cluster = Cluster(workdir / "cluster", {hostile.host: hostile.url}, hostile.host, size=1)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        if outcome.failed(request):
            print(cluster.log_tails(150))


def _image(
    hostile: FakeUpstream, tag: str, layer: FakeBlob, declared: int, repo: str = REPO
) -> str:
    """An image of `repo` whose manifest declares its layer as `declared` bytes."""
    config = FakeBlob(b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}')
    hostile.add(config)
    hostile.add(layer)
    descriptor = {"mediaType": OCI_LAYER, "digest": layer.digest, "size": declared}
    config_descriptor = {"mediaType": OCI_CONFIG, "digest": config.digest, "size": len(config.data)}
    hostile.add_manifest(
        repo,
        tag,
        _manifest({"schemaVersion": 2, "config": config_descriptor, "layers": [descriptor]}),
    )
    return layer.digest


async def _get_watching_memory(node: Node, url: str) -> tuple[int, bytes, bool, int]:
    """GET `url` from `node`, as a client would, while watching the node's memory: (status,
    body, whether it came whole, the node's peak RSS). Gives up at once should the node grow
    past 1 GiB (the attack this guards against took it to gigabytes)."""
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = _rss(node)
            assert peak < 1 << 30, f"the node grew to {peak >> 20} MiB"
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    try:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            get = asyncio.create_task(_get(session, url))
            done, _ = await asyncio.wait({get, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if watcher in done:
                get.cancel()
                watcher.result()
            status, body, whole = get.result()
    finally:
        watcher.cancel()
    return status, body, whole, max(peak, _peak_rss(node))


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes, bool]:
    async with session.get(url) as response:
        try:
            return response.status, await response.read(), True
        except aiohttp.ClientPayloadError:
            return response.status, b"", False


def _rss(node: Node) -> int:
    for line in Path(f"/proc/{node.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def test_a_layer_declared_at_16_tib_costs_neither_memory_nor_requests(
    hostile_cluster: Cluster, hostile: FakeUpstream
) -> None:
    """The manifest declares 2^44 bytes for a layer of 6 MiB: the node does not believe it (it
    is beyond --max-blob-size), asks the upstream for the size, and serves the layer."""
    node = hostile_cluster.nodes[0]
    digest = _image(hostile, "huge", _blob("huge-layer", LAYER), declared=HUGE)
    manifest = await rawhttp.request(node.host, "GET", f"/v2/{REPO}/manifests/huge")
    assert manifest.status == 200, manifest
    url = f"{node.url}/v2/{REPO}/blobs/{digest}"
    status, body, whole, peak = await _get_watching_memory(node, url)
    assert (status, whole, _sha256(body)) == (200, True, digest)
    assert len([r for r in hostile.requests() if r.path.endswith(digest)]) <= 4
    assert peak < 300 << 20, f"peak RSS {peak >> 20} MiB"
    assert len(node.log_path.read_text().splitlines()) < 2000
    assert hostile_cluster.nodes[0].stop() == 0  # SIGTERM: stopped within its grace period


async def test_a_blob_the_upstream_declares_at_16_tib_is_refused_before_any_byte(
    hostile_cluster: Cluster, hostile: FakeUpstream
) -> None:
    node = hostile_cluster.nodes[0]
    layer = _blob("lying-upstream", LAYER)
    layer.declared = HUGE
    digest = _image(hostile, "lying", layer, declared=HUGE)
    url = f"{node.url}/v2/{REPO}/blobs/{digest}"
    for method in ("HEAD", "GET"):
        response = await rawhttp.request(node.host, method, f"/v2/{REPO}/blobs/{digest}")
        assert response.status == 404, response
    status, body, _, peak = await _get_watching_memory(node, url)
    assert status == 404
    assert json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert "--max-blob-size" in json.loads(body)["errors"][0]["message"]
    # Its size was asked (HEAD), its bytes never (GET).
    assert {r.method for r in hostile.requests() if r.path.endswith(digest)} == {"HEAD"}
    assert node.stored_paths(digest) == []
    assert peak < 300 << 20
    assert node.stop() == 0


async def test_a_wrong_size_costs_a_few_requests_and_one_error(
    hostile_cluster: Cluster, hostile: FakeUpstream
) -> None:
    """The manifest declares 4 MiB more than the layer has: the first fetch shows the upstream's
    size, the pull fails with one error before any byte, and the next request for the layer gets
    it from the upstream whole."""
    node = hostile_cluster.nodes[0]
    layer = _blob("wrong-size", LAYER)
    digest = _image(hostile, "wrong", layer, declared=LAYER + (4 << 20))
    await rawhttp.request(node.host, "GET", f"/v2/{REPO}/manifests/wrong")
    url = f"{node.url}/v2/{REPO}/blobs/{digest}"
    status, body, _, _ = await _get_watching_memory(node, url)
    assert status == 502
    assert json.loads(body)["errors"][0]["code"] == "DIGEST_INVALID"
    assert len(hostile.blob_gets(digest)) <= 3
    await _until_nothing_stored(node, digest)
    status, body, whole, _ = await _get_watching_memory(node, url)
    assert (status, whole, _sha256(body)) == (200, True, digest)
    assert len(hostile.blob_gets(digest)) <= 4
    # The failed pull let its leases go, so its wrong shape yields to the layer's real one.
    await until(lambda: hostile_cluster.holders([digest]) == {digest: 1}, "the layer announced")
    # One failure: the chunk's, the download's and the request's line, not one per chunk.
    assert node.log_path.read_text().count("is not the size its manifest declares") <= 3


async def test_a_size_declared_in_another_repository_is_not_believed(
    hostile_cluster: Cluster, hostile: FakeUpstream
) -> None:
    """A manifest of another repository names the layer with 4 MiB too many: a pull of the
    layer in its own repository asks the upstream for its size, and gets it at once."""
    node = hostile_cluster.nodes[0]
    layer = _blob("named-elsewhere", LAYER)
    digest = _image(hostile, "elsewhere", layer, LAYER + (4 << 20), repo="test/other")
    named = await rawhttp.request(node.host, "GET", "/v2/test/other/manifests/elsewhere")
    assert named.status == 200, named
    url = f"{node.url}/v2/{REPO}/blobs/{digest}"
    status, body, whole, _ = await _get_watching_memory(node, url)
    assert (status, whole, _sha256(body)) == (200, True, digest)
    assert len(hostile.blob_gets(digest)) == 2  # one per chunk, each fetched once
    assert "is not the size its manifest declares" not in node.log_path.read_text()


async def _until_nothing_stored(node: Node, digest: str) -> None:
    """A failed download's temporary files go a moment after its client saw the failure."""
    for _ in range(100):
        if not node.stored_paths(digest):
            return
        await asyncio.sleep(0.05)
    assert node.stored_paths(digest) == []
