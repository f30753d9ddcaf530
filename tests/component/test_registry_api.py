"""The node's registry API in-process against a small scriptable upstream on loopback: the
behaviours that a real registry cannot be made to show (wrong bytes, 429, 5xx, redirects)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from node.app import Node, compose
from node.config import Config
from node.oci import mediatypes, sending
from tests.support import rawhttp


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class FakeUpstream:
    """Serves `blobs` and `manifests`; `script` overrides a path's answer; `hits` counts the GETs
    of each path, `heads` its HEADs (a node's access checks and size questions)."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    script: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = field(
        default_factory=dict
    )
    hits: Counter[str] = field(default_factory=Counter)
    heads: Counter[str] = field(default_factory=Counter)
    down: bool = False
    auth_headers: list[str | None] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            self.heads[request.path] += 1
        else:
            self.hits[request.path] += 1
            self.auth_headers.append(request.headers.get("Authorization"))
        if self.down:
            return web.Response(status=503)
        if request.path in self.script:
            return await self.script[request.path](request)
        _name, kind, ref = _split(request.path)
        if kind == "manifests" and ref in self.manifests:
            body, media_type = self.manifests[ref]
            headers = {"Docker-Content-Digest": digest_of(body), "Content-Type": media_type}
            return web.Response(body=body, headers=headers)
        if kind == "blobs" and ref in self.blobs:
            return web.Response(body=self.blobs[ref])
        return web.json_response({"errors": [{"code": "X", "message": "no"}]}, status=404)

    def add_image(self, tag: str, layer: bytes) -> tuple[str, str]:
        config = b'{"architecture":"amd64","os":"linux"}'
        self.blobs[digest_of(layer)] = layer
        self.blobs[digest_of(config)] = config
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mediatypes.OCI_MANIFEST,
                "config": {"digest": digest_of(config), "size": len(config)},
                "layers": [{"digest": digest_of(layer), "size": len(layer)}],
            }
        ).encode()
        self.manifests[tag] = self.manifests[digest_of(manifest)] = (
            manifest,
            mediatypes.OCI_MANIFEST,
        )
        return digest_of(manifest), digest_of(layer)


def _split(path: str) -> tuple[str, str, str]:
    head, _, ref = path.rpartition("/")
    name, _, kind = head.rpartition("/")
    return name.removeprefix("/v2/"), kind, ref


@dataclass
class Harness:
    upstream: FakeUpstream
    node: Node
    http: aiohttp.ClientSession
    base: str
    ns: str

    def url(self, path: str) -> str:
        return f"{self.base}{path}?ns={self.ns}"


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    upstream = FakeUpstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream.handle)
    upstream_server = TestServer(app, host="127.0.0.1")
    await upstream_server.start_server()
    ns = f"127.0.0.1:{upstream_server.port}"
    config = Config()
    config.store.data_dir = tmp_path / "data"
    config.cluster.peer_listen = "127.0.0.1:0"
    config.upstream.auth_file = str(tmp_path / "no-auth.json")
    config.upstream.registry = [f"{ns}=http://{ns}"]
    config.upstream.upstream_retries = 1
    config.upstream.upstream_timeout = 5
    async with compose(config) as node:
        node.ready = True
        node_server = TestServer(node.app, host="127.0.0.1")
        await node_server.start_server()
        async with aiohttp.ClientSession(auto_decompress=False) as http:
            yield Harness(upstream, node, http, f"http://127.0.0.1:{node_server.port}", ns)
        await node_server.close()
    await upstream_server.close()


async def errors_of(response: aiohttp.ClientResponse) -> list[str]:
    return [e["code"] for e in (await response.json())["errors"]]


async def test_manifest_by_tag_then_digest_with_headers(harness: Harness) -> None:
    manifest_digest, _ = harness.upstream.add_image("1", b"layer")
    async with harness.http.get(harness.url("/v2/test/app/manifests/1")) as r:
        assert r.status == 200
        body = await r.read()
        assert digest_of(body) == manifest_digest
        assert r.headers["Docker-Content-Digest"] == manifest_digest
        assert r.headers["Content-Type"] == mediatypes.OCI_MANIFEST
        assert r.headers["OCI-Namespace"] == harness.ns
    async with harness.http.head(harness.url(f"/v2/test/app/manifests/{manifest_digest}")) as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == str(len(body))
        assert await r.read() == b""
    assert harness.upstream.hits[f"/v2/test/app/manifests/{manifest_digest}"] == 0


async def test_stale_tag_is_served_when_upstream_fails(harness: Harness) -> None:
    manifest_digest, _ = harness.upstream.add_image("1", b"layer")
    async with harness.http.get(harness.url("/v2/test/app/manifests/1")) as r:
        assert r.status == 200
    harness.upstream.down = True
    async with harness.http.get(harness.url("/v2/test/app/manifests/1")) as r:
        assert r.status == 200
        assert r.headers["Docker-Content-Digest"] == manifest_digest
    async with harness.http.get(harness.url("/v2/test/app/manifests/2")) as r:
        assert r.status == 503
        assert await errors_of(r) == ["UNAVAILABLE"]


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "UNAUTHORIZED"), (403, "DENIED"), (404, "MANIFEST_UNKNOWN"), (429, "TOOMANYREQUESTS")],
)
async def test_upstream_statuses_reach_the_client_with_their_code(
    harness: Harness, status: int, code: str
) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Retry-After": "7"})

    harness.upstream.script["/v2/test/app/manifests/1"] = answer
    async with harness.http.get(harness.url("/v2/test/app/manifests/1")) as r:
        assert r.status == status
        assert await errors_of(r) == [code]
        if status == 429:
            assert r.headers["Retry-After"] == "7"


async def test_upstream_5xx_is_retried(harness: Harness) -> None:
    manifest_digest, _ = harness.upstream.add_image("1", b"layer")
    failures = [web.Response(status=502)]

    async def flaky(request: web.Request) -> web.StreamResponse:
        if failures:
            return failures.pop()
        del harness.upstream.script[request.path]
        return await harness.upstream.handle(request)

    harness.upstream.script["/v2/test/app/manifests/1"] = flaky
    async with harness.http.get(harness.url("/v2/test/app/manifests/1")) as r:
        assert r.status == 200
        assert r.headers["Docker-Content-Digest"] == manifest_digest


async def test_wrong_blob_bytes_are_never_served_whole_nor_stored(harness: Harness) -> None:
    real = b"R" * (300 << 10)
    digest = digest_of(real)
    harness.upstream.blobs[digest] = b"W" * len(real)
    path = f"/v2/test/app/blobs/{digest}"
    with pytest.raises(aiohttp.ClientPayloadError):
        async with harness.http.get(harness.url(path)) as r:
            await r.read()
    assert harness.node.store.stat(digest) is None
    harness.upstream.blobs[digest] = real
    async with harness.http.get(harness.url(path)) as r:
        assert await r.read() == real
    assert harness.upstream.hits[path] == 2


async def test_wrong_manifest_bytes_are_refused(harness: Harness) -> None:
    good = b'{"schemaVersion": 2}'
    harness.upstream.manifests[digest_of(good)] = (b'{"schemaVersion": 3}', mediatypes.OCI_MANIFEST)
    async with harness.http.get(harness.url(f"/v2/test/app/manifests/{digest_of(good)}")) as r:
        assert r.status == 502
        assert await errors_of(r) == ["DIGEST_INVALID"]
    assert harness.node.store.stat(digest_of(good)) is None


async def test_concurrent_cold_requests_share_one_upstream_fetch(harness: Harness) -> None:
    layer = bytes(range(256)) * (20 << 12)  # 5 MiB: two chunks
    digest = digest_of(layer)
    path = f"/v2/test/app/blobs/{digest}"
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(layer))})
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        await response.write(layer[: 1 << 20])
        await release.wait()
        await response.write(layer[1 << 20 :])
        return response

    harness.upstream.script[path] = slow

    async def get() -> bytes:
        async with harness.http.get(harness.url(path)) as r:
            return await r.read()

    pulls = [asyncio.create_task(get()) for _ in range(20)]
    await asyncio.sleep(0.3)
    release.set()
    bodies = await asyncio.gather(*pulls)
    assert all(body == layer for body in bodies)
    assert harness.upstream.hits[path] == 1
    metrics = harness.node.metrics
    assert metrics.blob_bytes.labels("upstream")._value.get() == 20 * len(layer)


async def test_first_bytes_arrive_before_the_blob_is_complete(harness: Harness) -> None:
    layer = b"x" * (3 << 20)
    path = f"/v2/test/app/blobs/{digest_of(layer)}"
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(layer))})
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        await response.write(layer[: 2 << 20])
        await release.wait()
        await response.write(layer[2 << 20 :])
        return response

    harness.upstream.script[path] = slow
    async with harness.http.get(harness.url(path)) as r:
        first = await asyncio.wait_for(r.content.readexactly(1 << 20), timeout=10)
        release.set()
        rest = await r.read()
    assert first + rest == layer


async def test_range_requests_on_cold_and_warm_blobs(harness: Harness) -> None:
    layer = bytes(range(256)) * 40_000
    harness.upstream.blobs[digest_of(layer)] = layer
    path = f"/v2/test/app/blobs/{digest_of(layer)}"
    for _ in ("cold", "warm"):
        async with harness.http.get(harness.url(path), headers={"Range": "bytes=100-199"}) as r:
            assert r.status == 206
            assert r.headers["Content-Range"] == f"bytes 100-199/{len(layer)}"
            assert await r.read() == layer[100:200]
    async with harness.http.get(harness.url(path), headers={"Range": "bytes=99999999-"}) as r:
        assert r.status == 416
        assert r.headers["Content-Range"] == f"bytes */{len(layer)}"


async def test_blob_head_does_not_download(harness: Harness) -> None:
    layer = b"y" * 1000
    harness.upstream.blobs[digest_of(layer)] = layer
    path = f"/v2/test/app/blobs/{digest_of(layer)}"
    async with harness.http.head(harness.url(path)) as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == "1000"
        assert await r.read() == b""
    assert harness.node.store.stat(digest_of(layer)) is None


async def test_redirects_to_blob_storage_drop_credentials(harness: Harness) -> None:
    layer = b"z" * 5000
    storage = web.Application()
    seen: list[str | None] = []

    async def serve(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(body=layer)

    storage.router.add_get("/bucket", serve)
    # Another origin on the registry's own address (one the node may reach: `node.upstream.reach`).
    server = TestServer(storage, host="127.0.0.1")
    await server.start_server()
    path = f"/v2/test/app/blobs/{digest_of(layer)}"

    async def redirect(request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return web.Response(headers={"Content-Length": str(len(layer))})
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{server.port}/bucket")

    harness.upstream.script[path] = redirect
    try:
        async with harness.http.get(harness.url(path)) as r:
            assert await r.read() == layer
    finally:
        await server.close()
    assert seen == [None]


async def test_bearer_tokens_are_fetched_once_per_scope(harness: Harness, tmp_path: Path) -> None:
    harness.upstream.add_image("1", b"layer")
    token_requests: list[dict[str, str]] = []

    async def token(request: web.Request) -> web.Response:
        token_requests.append(dict(request.query))
        return web.json_response({"token": "t0k", "expires_in": 300})

    realm = f"http://{harness.ns}/token"
    guarded = ("/v2/test/app/manifests/1",)

    async def challenge(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer t0k":
            header = f'Bearer realm="{realm}",service="fake",scope="repository:test/app:pull"'
            return web.Response(status=401, headers={"WWW-Authenticate": header})
        del harness.upstream.script[request.path]
        try:
            return await harness.upstream.handle(request)
        finally:
            harness.upstream.script[request.path] = challenge

    harness.upstream.script["/token"] = token
    for path in guarded:
        harness.upstream.script[path] = challenge
    for _ in range(3):
        async with harness.http.get(harness.url("/v2/test/app/manifests/1")) as r:
            assert r.status == 200
    assert token_requests == [{"scope": "repository:test/app:pull", "service": "fake"}]


async def test_bad_requests(harness: Harness) -> None:
    cases = [
        ("GET", "/v2/Bad/manifests/1", 400, "NAME_INVALID"),
        ("GET", "/v2/a/manifests/bad!tag", 400, "TAG_INVALID"),
        ("GET", "/v2/a/blobs/sha256:123", 400, "DIGEST_INVALID"),
        ("POST", "/v2/a/blobs/uploads/", 405, "UNSUPPORTED"),
        ("PUT", "/v2/a/manifests/1", 405, "UNSUPPORTED"),
        ("DELETE", "/v2/_catalog", 405, "UNSUPPORTED"),
    ]
    for method, path, status, code in cases:
        async with harness.http.request(method, harness.url(path)) as r:
            assert (r.status, await errors_of(r)) == (status, [code]), path
    async with harness.http.get(f"{harness.base}/v2/a/manifests/1?ns=bad/ns") as r:
        assert await errors_of(r) == ["NAME_INVALID"]
    async with harness.http.head(harness.url("/v2/Bad/manifests/1")) as r:
        assert r.status == 400
        assert await r.read() == b""


async def test_a_stored_blob_the_disk_cannot_read_is_purged_and_fetched_again(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad sector under a stored blob: sending it fails with EIO. The transfer breaks (the
    client retries), and the blob is read back at once: unreadable, it is purged, so the retry
    fetches it again rather than failing the same way forever."""
    data = b"B" * (300 << 10)
    digest = digest_of(data)
    harness.upstream.blobs[digest] = data
    path = f"/v2/test/app/blobs/{digest}"
    async with harness.http.get(harness.url(path)) as r:
        assert await r.read() == data
    await _until(lambda: harness.node.store.stat(digest) is not None)  # put on disk after

    def bad_sector(*args: object, **kwargs: object) -> object:
        raise OSError(errno.EIO, "Input/output error")

    loop = asyncio.get_running_loop()
    with monkeypatch.context() as disk:
        disk.setattr(loop, "sendfile", bad_sector)
        disk.setattr(harness.node.store._backend, "read", bad_sector)
        with pytest.raises(aiohttp.ClientPayloadError):
            async with harness.http.get(harness.url(path)) as r:
                await r.read()
        await _until(lambda: harness.node.store.stat(digest) is None)  # purged, not served
    async with harness.http.get(harness.url(path)) as r:
        assert await r.read() == data
    assert harness.upstream.hits[path] == 2


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    assert condition()


async def test_a_stored_manifest_the_disk_cannot_read_is_purged_and_fetched_again(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad sector under a stored manifest: reading it fails with EIO. The store reads the copy
    back at once and purges it, and the request is answered from upstream, which puts a fresh
    copy in its place; nothing answers 500 for it."""
    manifest, _ = harness.upstream.add_image("v1", b"L" * 1000)
    path = f"/v2/test/app/manifests/{manifest}"
    async with harness.http.get(harness.url(path)) as r:
        assert r.status == 200
        body = await r.read()
    assert harness.node.store.stat(manifest) is not None
    damaged = harness.node.metrics.damaged_blobs.labels("scrub")

    def bad_sector(*args: object, **kwargs: object) -> object:
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as disk:
        disk.setattr(harness.node.store._backend, "read", bad_sector)
        for attempt in (1, 2):
            async with harness.http.get(harness.url(path)) as r:
                assert r.status == 200
                assert await r.read() == body
            assert damaged._value.get() == attempt
            assert harness.upstream.hits[path] == 1 + attempt
    async with harness.http.get(harness.url(path)) as r:  # the fresh copy, from the store
        assert await r.read() == body
    assert harness.upstream.hits[path] == 3
    assert harness.node.store.stat(manifest) is not None


async def test_a_client_that_stops_reading_a_blob_is_cut_off(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that asks for a blob and then reads nothing held its connection, a file and the
    blob (kept from eviction) for ever: enough of them and every connection the node allows is
    taken. A transfer the client has taken nothing of for SEND_STALL_SECONDS is aborted."""
    data = random.Random(7).randbytes(32 << 20)  # far more than socket buffers hold
    digest = digest_of(data)
    harness.upstream.blobs[digest] = data
    path = harness.url(f"/v2/test/app/blobs/{digest}").removeprefix(harness.base)
    async with harness.http.get(harness.url(f"/v2/test/app/blobs/{digest}")) as r:
        assert await r.read() == data
    await _until(lambda: harness.node.store.stat(digest) is not None)
    monkeypatch.setattr(sending, "SEND_STALL_SECONDS", 1.0)

    host = harness.base.removeprefix("http://")
    # The head and what the node sent before it gave up: then the end.
    received = await rawhttp.stalled_read(host, path, 1, len(data))
    assert 0 < received < len(data)


@pytest.mark.parametrize("stored", [True, False], ids=["stored", "unstored"])
async def test_a_client_that_stops_reading_manifests_is_cut_off(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, stored: bool
) -> None:
    """A manifest was answered whole at once, after the handler: a client that asked for one
    near the 4 MiB bound a few times over one connection and read nothing held its connection,
    and about 10 MiB of the node's memory, for ever. It is now sent as a blob is, from the
    stored copy (or a slice at a time when the store could not keep it), and cut off the same."""
    monkeypatch.setattr(sending, "SEND_STALL_SECONDS", 1.0)
    if not stored:

        async def refused(digest: str, data: bytes, media_type: str | None = None) -> bool:
            return False

        monkeypatch.setattr(harness.node.store, "keep", refused)
    config = b'{"architecture":"amd64","os":"linux"}'
    harness.upstream.blobs[digest_of(config)] = config
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "config": {"digest": digest_of(config), "size": len(config)},
            "layers": [],
            "annotations": {"padding": "x" * 4_000_000},
        }
    ).encode()
    harness.upstream.manifests["big"] = (manifest, mediatypes.OCI_MANIFEST)
    url = harness.url("/v2/test/app/manifests/big")
    async with harness.http.get(url) as r:
        assert r.status == 200
        assert await r.read() == manifest
    assert (harness.node.store.stat(digest_of(manifest)) is not None) == stored

    asked = 4  # more than the socket buffers between the two hold
    target = url.removeprefix(harness.base)
    host = harness.base.removeprefix("http://")
    received = await rawhttp.stalled_read(host, target, asked, asked * len(manifest))
    assert 0 < received < asked * len(manifest)
