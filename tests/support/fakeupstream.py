"""A fake upstream registry that misbehaves on purpose: wrong bytes, short bodies, slow bodies,
bodies that stop half-way and never end, redirects to wherever a test says, manifests of any
shape and size, auth challenges naming any token service.

It serves blobs (`GET`/`HEAD /v2/<name>/blobs/<digest>`, with `Range`) the way a broken CDN or a
registry with a corrupted store would, manifests as a test wrote them (bytes and Content-Type
as given, or a body streamed without end), and records every request, so a test can see whether
the node came back for a blob, followed a redirect or asked a token service.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from aiohttp import web

from tests.support.httpserver import BackgroundServer
from tests.support.process import LOOPBACK

PIECE = 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Fault(Enum):
    NONE = "none"
    FLIPPED = "flipped"  # right length, one byte changed in the middle
    TRUNCATED = "truncated"  # announces the full length, sends half, then drops the connection
    STALLED = "stalled"  # the first transfer sends half, then nothing, its connection kept open


@dataclass
class FakeBlob:
    data: bytes
    fault: Fault = Fault.NONE
    rate: float | None = None  # bytes per second over all its responses; None: no limit
    declared: int | None = None  # the size it claims (Content-Length, Content-Range); None: its own

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def served_bytes(self) -> bytes:
        if self.fault is Fault.FLIPPED:
            middle = len(self.data) // 2
            return self.data[:middle] + bytes([self.data[middle] ^ 0xFF]) + self.data[middle + 1 :]
        return self.data


@dataclass(frozen=True)
class FakeManifest:
    body: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.body).hexdigest()


@dataclass(frozen=True)
class FakeRequest:
    method: str
    path: str
    range: str | None
    authorization: str | None = None


class FakeUpstream:
    def __init__(self, host: str = LOOPBACK) -> None:
        self._blobs: dict[str, FakeBlob] = {}
        self._manifests: dict[str, FakeManifest] = {}  # by "repo:reference"
        self._endless: set[str] = set()  # "repo:reference" answered with a body without end
        self._redirects: dict[str, str] = {}  # blob digest, or "repo:reference" -> Location
        self._realm: str | None = None  # a Bearer challenge naming this token service
        self._statuses: dict[str, int] = {}  # path -> the status it is answered with
        # Requests being answered, and the most at once: by method, and "*" for all.
        self._in_flight: Counter[str] = Counter()
        self._most_in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._requests: list[FakeRequest] = []
        self._sent: dict[str, int] = {}
        # Per blob, owned by the server's loop: concurrent (ranged) responses share the rate.
        self._pace: dict[str, asyncio.Lock] = {}
        self._server = BackgroundServer(self._application, host)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    @property
    def host(self) -> str:
        return f"{self._server.host}:{self._server.port}"

    @property
    def url(self) -> str:
        return self._server.url

    def add(self, blob: FakeBlob) -> str:
        with self._lock:
            self._blobs[blob.digest] = blob
        return blob.digest

    def add_manifest(self, repo: str, tag: str, manifest: FakeManifest) -> str:
        """Serve the manifest under the tag and its digest, as given, whatever it holds."""
        with self._lock:
            self._manifests[f"{repo}:{tag}"] = manifest
            self._manifests[f"{repo}:{manifest.digest}"] = manifest
        return manifest.digest

    def add_endless_manifest(self, repo: str, tag: str) -> None:
        """Answer the tag with a JSON body that never ends (and no Content-Length)."""
        with self._lock:
            self._endless.add(f"{repo}:{tag}")

    def redirect(self, digest: str, location: str) -> None:
        """Answer GETs of the blob with 307 to `location` (blob storage, as registries do)."""
        with self._lock:
            self._redirects[digest] = location

    def redirect_manifest(self, repo: str, reference: str, location: str) -> None:
        """Answer GETs of the manifest with 307 to `location`."""
        with self._lock:
            self._redirects[f"{repo}:{reference}"] = location

    def answer_with(self, path: str, status: int) -> None:
        """Answer requests for `path` with `status` and no body, whatever the status is."""
        with self._lock:
            self._statuses[path] = status

    def most_in_flight(self, method: str = "*") -> int:
        """The most requests (of `method`, or any) it was answering at once (its open
        connections, busy)."""
        with self._lock:
            return self._most_in_flight[method]

    def challenge(self, realm: str) -> None:
        """Answer every request without credentials 401 with a Bearer challenge to `realm`."""
        with self._lock:
            self._realm = realm

    def set_rate(self, digest: str, rate: float | None) -> None:
        with self._lock:
            self._blobs[digest].rate = rate

    def requests(self) -> list[FakeRequest]:
        with self._lock:
            return list(self._requests)

    def blob_gets(self, digest: str) -> list[FakeRequest]:
        return [r for r in self.requests() if r.method == "GET" and r.path.endswith(digest)]

    def bytes_sent(self, digest: str) -> int:
        """Body bytes sent for the digest over all GETs so far."""
        with self._lock:
            return self._sent.get(digest, 0)

    def _application(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/v2/", self._base, allow_head=True)
        app.router.add_get("/v2/{name:.+}/manifests/{reference}", self._manifest, allow_head=True)
        app.router.add_get("/v2/{name:.+}/blobs/{digest}", self._blob, allow_head=True)
        app.router.add_route("*", "/{tail:.*}", self._anything)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        authorization = request.headers.get("Authorization")
        with self._lock:
            self._requests.append(
                FakeRequest(
                    request.method, request.path, request.headers.get("Range"), authorization
                )
            )
            realm = self._realm
            status = self._statuses.get(request.path)
            for key in ("*", request.method):
                self._in_flight[key] += 1
                self._most_in_flight[key] = max(self._most_in_flight[key], self._in_flight[key])
        try:
            if status is not None:
                return web.Response(status=status)
            if realm is not None and authorization is None and request.path.startswith("/v2/"):
                challenge = f'Bearer realm="{realm}",service="fake",scope="repository:x:pull"'
                return _error(401, "UNAUTHORIZED", "authentication required", challenge)
            return await handler(request)
        finally:
            with self._lock:
                self._in_flight.subtract(("*", request.method))

    async def _base(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _anything(self, request: web.Request) -> web.Response:
        """Any other path: what a service that is no registry answers (a token service, a
        metadata endpoint)."""
        return web.json_response({"token": "secret-of-the-service", "path": request.path})

    async def _manifest(self, request: web.Request) -> web.StreamResponse:
        key = f"{request.match_info['name']}:{request.match_info['reference']}"
        with self._lock:
            manifest = self._manifests.get(key)
            endless = key in self._endless
            location = self._redirects.get(key)
        if location is not None and request.method == "GET":
            return web.Response(status=307, headers={"Location": location})
        if endless:
            return await _endless(request)
        if manifest is None:
            return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        headers = {"Content-Type": manifest.media_type, "Docker-Content-Digest": manifest.digest}
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(manifest.body))
            return web.Response(headers=headers)
        return web.Response(body=manifest.body, headers=headers)

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        with self._lock:
            blob = self._blobs.get(digest)
            location = self._redirects.get(digest)
        if location is not None and request.method == "GET":
            return web.Response(status=307, headers={"Location": location})
        if blob is None:
            return _error(404, "BLOB_UNKNOWN", "blob unknown")
        body = blob.served_bytes()
        start, end, status = _range(request.headers.get("Range"), len(body))
        headers = {
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": digest,
            "Accept-Ranges": "bytes",
        }
        claimed = len(body) if blob.declared is None else blob.declared
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{claimed}"
        if request.method == "HEAD":
            headers["Content-Length"] = str(claimed if status == 200 else end - start)
            return web.Response(status=status, headers=headers)
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = claimed if status == 200 else end - start
        await response.prepare(request)
        await self._send(request, response, blob, digest, body[start:end])
        return response

    async def _send(
        self,
        request: web.Request,
        response: web.StreamResponse,
        blob: FakeBlob,
        digest: str,
        body: bytes,
    ) -> None:
        stalled = blob.fault is Fault.STALLED
        limit = len(body) // 2 if blob.fault is Fault.TRUNCATED or stalled else len(body)
        if stalled:
            blob.fault = Fault.NONE  # the next transfers are whole
        # Less than the headers announced (cut in half, or a size claimed larger than the
        # blob): the connection drops after the last byte sent.
        short = (limit < len(body) and not stalled) or (blob.declared or 0) > len(blob.data)
        pace = self._pace.setdefault(digest, asyncio.Lock())
        for offset in range(0, limit, PIECE):
            piece = body[offset : min(offset + PIECE, limit)]
            async with pace:
                # The pause comes before the piece: once the last byte is sent, the response
                # is over (the node may start its next request then).
                with self._lock:
                    rate = blob.rate
                if rate:
                    await asyncio.sleep(len(piece) / rate)
                await response.write(piece)
                with self._lock:
                    self._sent[digest] = self._sent.get(digest, 0) + len(piece)
        if short:
            assert request.transport is not None
            request.transport.abort()  # the body ends early: the connection drops
            return
        if limit < len(body):  # stalled: the connection stays open until the client leaves
            await asyncio.Event().wait()
        await response.write_eof()


def _range(header: str | None, size: int) -> tuple[int, int, int]:
    """(start, end, status) for the simple `bytes=a-b` / `bytes=a-` ranges a node sends."""
    if not header or not header.startswith("bytes="):
        return 0, size, 200
    first, _, last = header.removeprefix("bytes=").partition("-")
    start = int(first) if first else max(0, size - int(last))
    end = size if (not first or not last) else min(size, int(last) + 1)
    return start, end, 206


def _error(status: int, code: str, message: str, challenge: str | None = None) -> web.Response:
    response = web.json_response({"errors": [{"code": code, "message": message}]}, status=status)
    if challenge is not None:
        response.headers["WWW-Authenticate"] = challenge
    return response


async def _endless(request: web.Request) -> web.StreamResponse:
    """A JSON document that never ends, until the client goes away."""
    response = web.StreamResponse(
        headers={"Content-Type": "application/vnd.oci.image.index.v1+json"}
    )
    await response.prepare(request)
    await response.write(b'{"schemaVersion": 2, "manifests": [')
    entry = b'{"mediaType": "x", "digest": "sha256:' + b"0" * 64 + b'", "size": 1},'
    with contextlib.suppress(ConnectionError):
        while True:
            await response.write(entry * 1024)
    return response
