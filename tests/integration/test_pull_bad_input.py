"""What a node answers to requests a registry client should not send, over real sockets:
the OCI error envelope with the right code, never a 500, never a byte it should not send."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from tests.support import rawhttp
from tests.support.images import OCI_INDEX, OCI_MANIFEST, TestImages
from tests.support.node import Node
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

APP = TestImages.APP
ZERO_DIGEST = "sha256:" + "0" * 64


@pytest.fixture
def node(shared_node: Node) -> Node:
    """Bad requests leave no state behind: one node serves every test here but those that need
    a cold cache (`fresh_node`)."""
    return shared_node


@pytest.fixture
def fresh_node(node_factory: Callable[..., Node], upstream: Registry) -> Node:
    return node_factory({upstream.host: upstream.url}, upstream.host)


def _codes(response: rawhttp.RawResponse) -> list[str]:
    assert response.headers.get("Content-Type", "").startswith("application/json"), response
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("errors"), list), body
    for error in body["errors"]:
        assert set(error) <= {"code", "message", "detail"} and error["message"], body
    return [error["code"] for error in body["errors"]]


@pytest.mark.parametrize(
    "target",
    [
        "/v2/Test/App/manifests/1",  # upper case
        "/v2/test//app/manifests/1",  # empty component
        "/v2/-test/app/manifests/1",  # leading separator
        "/v2/test/app_/manifests/1",  # trailing separator
        "/v2/test/ap%20p/manifests/1",  # a space
        f"/v2/{'a' * 256}/manifests/1",  # longer than 255
        f"/v2/Test/App/blobs/{ZERO_DIGEST}",
    ],
)
async def test_malformed_names_are_name_invalid(node: Node, target: str) -> None:
    response = await rawhttp.request(node.host, "GET", target)
    assert response.status == 400, response
    assert _codes(response) == ["NAME_INVALID"]


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:xyz",
        "sha256:" + "0" * 63,  # too short
        "sha256:" + "0" * 65,  # too long
        "sha256:" + "A" * 64,  # upper-case hex
        "sha256" + "0" * 64,  # no algorithm separator
        "md5:d41d8cd98f00b204e9800998ecf8427e",  # an algorithm nobody stores
    ],
)
async def test_malformed_blob_digests_are_digest_invalid(node: Node, digest: str) -> None:
    response = await rawhttp.request(node.host, "GET", f"/v2/{APP}/blobs/{digest}")
    assert response.status == 400, response
    assert _codes(response) == ["DIGEST_INVALID"]


async def test_malformed_manifest_digest_is_digest_invalid(node: Node) -> None:
    response = await rawhttp.request(node.host, "GET", f"/v2/{APP}/manifests/sha256:abc")
    assert response.status == 400, response
    assert _codes(response) == ["DIGEST_INVALID"]


async def test_unknown_blob_and_manifest_are_reported_as_such(node: Node) -> None:
    blob = await rawhttp.request(node.host, "GET", f"/v2/{APP}/blobs/{ZERO_DIGEST}")
    assert blob.status == 404, blob
    assert _codes(blob) == ["BLOB_UNKNOWN"]
    manifest = await rawhttp.request(node.host, "GET", f"/v2/{APP}/manifests/no-such-tag")
    assert manifest.status == 404, manifest
    assert _codes(manifest) == ["MANIFEST_UNKNOWN"]


@pytest.mark.parametrize(
    "target",
    [
        f"/v2/test/../../../etc/blobs/{ZERO_DIGEST}",
        f"/v2/test/%2e%2e/%2e%2e/blobs/{ZERO_DIGEST}",
        f"/v2/../{APP}/manifests/1",
        f"/v2/{APP}/manifests/..",
        f"/v2/{APP}/manifests/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        f"/v2/{APP}/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd",
    ],
)
async def test_dot_dot_in_paths_never_reaches_the_filesystem(node: Node, target: str) -> None:
    response = await rawhttp.request(node.host, "GET", target)
    assert 400 <= response.status < 500, response
    assert b"root:" not in response.body
    if response.body:
        assert _codes(response)[0] in (
            "NAME_INVALID",
            "TAG_INVALID",
            "MANIFEST_INVALID",
            "DIGEST_INVALID",
            "NAME_UNKNOWN",
            "MANIFEST_UNKNOWN",
            "BLOB_UNKNOWN",
            "UNSUPPORTED",
        )
    alive = await rawhttp.request(node.host, "GET", "/v2/")
    assert alive.status == 200


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("POST", f"/v2/{APP}/blobs/uploads/"),
        ("POST", f"/v2/{APP}/blobs/uploads/?mount={ZERO_DIGEST}&from=other/repo"),
        ("PATCH", f"/v2/{APP}/blobs/uploads/some-upload-id"),
        ("PUT", f"/v2/{APP}/blobs/uploads/some-upload-id?digest={ZERO_DIGEST}"),
        ("PUT", f"/v2/{APP}/manifests/2"),
        ("DELETE", f"/v2/{APP}/manifests/1"),
        ("DELETE", f"/v2/{APP}/blobs/{ZERO_DIGEST}"),
    ],
)
async def test_push_and_delete_endpoints_are_unsupported(
    node: Node, upstream: Registry, method: str, target: str
) -> None:
    mark = upstream.mark()
    response = await rawhttp.request(node.host, method, target, {"Content-Length": "0"})
    assert 400 <= response.status < 500, response
    assert _codes(response) == ["UNSUPPORTED"]
    assert [e for e in upstream.entries(mark) if e.method != "GET"] == []


async def test_head_of_a_manifest_has_headers_and_no_body(
    node: Node, test_images: TestImages
) -> None:
    response = await rawhttp.request(
        node.host, "HEAD", f"/v2/{APP}/manifests/1", {"Accept": OCI_MANIFEST}
    )
    assert response.status == 200, response
    assert response.body == b""
    assert response.headers["Docker-Content-Digest"] == test_images.app.digest
    assert response.headers["Content-Length"] == str(test_images.app.top.size)
    assert response.headers["Content-Type"] == OCI_MANIFEST


async def test_head_of_a_blob_has_headers_and_no_body(
    fresh_node: Node, test_images: TestImages
) -> None:
    node = fresh_node
    layer = test_images.app.largest_layer()
    for _ in ("cold", "warm"):
        response = await rawhttp.request(node.host, "HEAD", f"/v2/{APP}/blobs/{layer.digest}")
        assert response.status == 200, response
        assert response.body == b""
        assert response.headers["Content-Length"] == str(layer.size)
        assert response.headers["Docker-Content-Digest"] == layer.digest
        await rawhttp.request(node.host, "GET", f"/v2/{APP}/blobs/{layer.digest}")


async def test_head_of_an_unknown_blob_is_404_without_body(node: Node) -> None:
    response = await rawhttp.request(node.host, "HEAD", f"/v2/{APP}/blobs/{ZERO_DIGEST}")
    assert response.status == 404, response
    assert response.body == b""


async def test_get_manifest_has_digest_type_and_length(node: Node, test_images: TestImages) -> None:
    index = test_images.multi
    response = await rawhttp.request(
        node.host,
        "GET",
        f"/v2/{TestImages.MULTI}/manifests/1",
        {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"},
    )
    assert response.status == 200, response
    assert response.headers["Content-Type"] == OCI_INDEX
    assert response.headers["Docker-Content-Digest"] == index.digest
    assert "sha256:" + hashlib.sha256(response.body).hexdigest() == index.digest
    assert int(response.headers["Content-Length"]) == len(response.body) == index.top.size


async def test_ns_is_echoed_as_oci_namespace(node: Node, upstream: Registry) -> None:
    for target in ("/v2/", f"/v2/{APP}/manifests/1"):
        response = await rawhttp.request(
            node.host, "GET", f"{target}?ns={upstream.host}", {"Accept": OCI_MANIFEST}
        )
        assert response.status == 200, response
        assert response.headers["OCI-Namespace"] == upstream.host


@pytest.mark.parametrize("ns", ["%00", "%0d%0aSet-Cookie:%20x=1", "%7f", "a%0ab"])
@pytest.mark.parametrize(
    "target", ["/v2/", f"/v2/{APP}/manifests/1", f"/v2/{APP}/blobs/{ZERO_DIGEST}"]
)
async def test_an_ns_no_registry_has_is_answered_and_never_echoed(
    node: Node, ns: str, target: str
) -> None:
    """Echoed into OCI-Namespace, a control character made aiohttp drop the connection without
    an answer (and log a traceback)."""
    response = await rawhttp.request(node.host, "GET", f"{target}?ns={ns}")
    assert response.status in (200, 400), response
    assert "OCI-Namespace" not in response.headers
    assert "Set-Cookie" not in response.headers
    assert "Traceback" not in node.log_path.read_text()


# Range requests, on the app image's 8 MiB layer (two 4 MiB chunks and a bit).


def _blob_bytes(test_images: TestImages) -> tuple[str, bytes]:
    layer = test_images.app.largest_layer()
    return layer.digest, test_images.app.read_blob(layer.digest)


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 1),
        ("bytes=10-19", 10, 20),
        ("bytes=4194300-4194309", 4194300, 4194310),  # across the chunk boundary
        ("bytes=8000000-", 8000000, None),
        ("bytes=-100", -100, None),
        ("bytes=8396000-99999999", 8396000, None),  # the end is clamped to the size
    ],
)
async def test_range_gets_206_with_content_range(
    node: Node, test_images: TestImages, header: str, start: int, end: int | None
) -> None:
    await _check_range(node, test_images, header, start, end)


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=4194300-4194309", 4194300, 4194310), ("bytes=-100", -100, None)],
)
async def test_range_get_of_a_cold_blob_gets_206_then_the_blob_is_whole(
    fresh_node: Node, test_images: TestImages, header: str, start: int, end: int | None
) -> None:
    await _check_range(fresh_node, test_images, header, start, end)
    digest, data = _blob_bytes(test_images)
    whole = await rawhttp.request(fresh_node.host, "GET", f"/v2/{APP}/blobs/{digest}")
    assert whole.status == 200, whole
    assert hashlib.sha256(whole.body).hexdigest() == hashlib.sha256(data).hexdigest()


async def _check_range(
    node: Node, test_images: TestImages, header: str, start: int, end: int | None
) -> None:
    digest, data = _blob_bytes(test_images)
    expected = data[start:end]
    first = start if start >= 0 else len(data) + start
    response = await rawhttp.request(
        node.host, "GET", f"/v2/{APP}/blobs/{digest}", {"Range": header}
    )
    assert response.status == 206, response
    assert response.body == expected
    content_range = f"bytes {first}-{first + len(expected) - 1}/{len(data)}"
    assert response.headers["Content-Range"] == content_range
    assert response.headers["Content-Length"] == str(len(expected))


@pytest.mark.parametrize("header", ["bytes=8396800-", "bytes=9999999-10000000", "bytes=-0"])
async def test_unsatisfiable_range_is_416(node: Node, test_images: TestImages, header: str) -> None:
    digest, data = _blob_bytes(test_images)
    assert len(data) == 8396800
    response = await rawhttp.request(
        node.host, "GET", f"/v2/{APP}/blobs/{digest}", {"Range": header}
    )
    assert response.status == 416, response
    assert response.headers["Content-Range"] == f"bytes */{len(data)}"


@pytest.mark.parametrize(
    "header", ["bytes=abc", "items=0-10", "bytes=--1", "bytes=1-2-3", "bytes=5-2"]
)
async def test_malformed_range_is_416_or_the_whole_blob(
    node: Node, test_images: TestImages, header: str
) -> None:
    """RFC 9110 lets a server ignore a Range it cannot parse; it must not answer anything else."""
    digest, data = _blob_bytes(test_images)
    response = await rawhttp.request(
        node.host, "GET", f"/v2/{APP}/blobs/{digest}", {"Range": header}
    )
    if response.status == 200:
        assert response.body == data
    else:
        assert response.status == 416, response
        assert _codes(response) == ["RANGE_INVALID"]
