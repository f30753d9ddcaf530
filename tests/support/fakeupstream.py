"""A fake upstream registry that misbehaves on purpose: wrong bytes, short bodies, slow bodies.

It serves blobs only (`GET`/`HEAD /v2/<name>/blobs/<digest>`, with `Range`), the way a broken
CDN or a registry with a corrupted store would, and records every request, so a test can see
whether the node came back for a blob or kept what it got.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from dataclasses import dataclass
from enum import Enum

from aiohttp import web

from tests.support.httpserver import BackgroundServer

PIECE = 64 * 1024


class Fault(Enum):
    NONE = "none"
    FLIPPED = "flipped"  # right length, one byte changed in the middle
    TRUNCATED = "truncated"  # announces the full length, sends half, then drops the connection


@dataclass
class FakeBlob:
    data: bytes
    fault: Fault = Fault.NONE
    rate: float | None = None  # bytes per second over all its responses; None: no limit

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def served_bytes(self) -> bytes:
        if self.fault is Fault.FLIPPED:
            middle = len(self.data) // 2
            return self.data[:middle] + bytes([self.data[middle] ^ 0xFF]) + self.data[middle + 1 :]
        return self.data


@dataclass(frozen=True)
class FakeRequest:
    method: str
    path: str
    range: str | None


class FakeUpstream:
    def __init__(self) -> None:
        self._blobs: dict[str, FakeBlob] = {}
        self._lock = threading.Lock()
        self._requests: list[FakeRequest] = []
        self._sent: dict[str, int] = {}
        # Per blob, owned by the server's loop: concurrent (ranged) responses share the rate.
        self._pace: dict[str, asyncio.Lock] = {}
        self._server = BackgroundServer(self._application)

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
        app = web.Application()
        app.router.add_get("/v2/", self._base, allow_head=True)
        app.router.add_get("/v2/{name:.+}/blobs/{digest}", self._blob, allow_head=True)
        return app

    async def _base(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        with self._lock:
            self._requests.append(
                FakeRequest(request.method, request.path, request.headers.get("Range"))
            )
            blob = self._blobs.get(digest)
        if blob is None:
            error = {"code": "BLOB_UNKNOWN", "message": "blob unknown", "detail": digest}
            return web.json_response({"errors": [error]}, status=404)
        body = blob.served_bytes()
        start, end, status = _range(request.headers.get("Range"), len(body))
        headers = {
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": digest,
            "Accept-Ranges": "bytes",
        }
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(body)}"
        if request.method == "HEAD":
            headers["Content-Length"] = str(end - start)
            return web.Response(status=status, headers=headers)
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = end - start
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
        limit = len(body) // 2 if blob.fault is Fault.TRUNCATED else len(body)
        pace = self._pace.setdefault(digest, asyncio.Lock())
        for offset in range(0, limit, PIECE):
            piece = body[offset : min(offset + PIECE, limit)]
            async with pace:
                await response.write(piece)
                with self._lock:
                    self._sent[digest] = self._sent.get(digest, 0) + len(piece)
                    rate = blob.rate
                if rate:
                    await asyncio.sleep(len(piece) / rate)
        if limit < len(body):
            assert request.transport is not None
            request.transport.abort()  # the body ends early: the connection drops
            return
        await response.write_eof()


def _range(header: str | None, size: int) -> tuple[int, int, int]:
    """(start, end, status) for the simple `bytes=a-b` / `bytes=a-` ranges a node sends."""
    if not header or not header.startswith("bytes="):
        return 0, size, 200
    first, _, last = header.removeprefix("bytes=").partition("-")
    start = int(first) if first else max(0, size - int(last))
    end = size if (not first or not last) else min(size, int(last) + 1)
    return start, end, 206
