"""The HTTP client of upstream registries: auth, retries with backoff, and OCI status mapping.

Every request goes through `_open`, which answers auth challenges, retries connection errors and
5xx responses with backoff, follows redirects to blob storage (aiohttp drops the Authorization
header when a redirect leaves the registry's origin), and turns upstream statuses into the
node's domain errors, so a 401/403/404/429 upstream never reaches a client as a 500.

Connections go only where `node.upstream.reach` allows: public addresses, and for a registry the
operator configured, its own addresses and the networks allowed with it. The public registries
share one pool; each configured registry has its own, of at most `connections` each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

from node.errors import (
    BlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NodeError,
    NotFound,
    UpstreamDenied,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRefused,
    UpstreamUnauthorized,
    UpstreamUnavailable,
)
from node.metrics import NodeMetrics
from node.oci.reference import TAG
from node.upstream.auth import Authenticator, pull_scope
from node.upstream.reach import AllowingResolver, Network, Reach, refusal
from node.upstream.registries import Upstream

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 4 << 20
MAX_TAGS = 10_000  # of one repository: more are not listed
TAG_PAGE = 1000  # asked of the upstream per request
# Bytes gathered into a block: each block costs a hop to the store's writer thread and a
# sendfile to each client following the download, so fewer, larger blocks cost less per byte.
STREAM_BLOCK = 4 << 20
# The first block of a stream: clients following a download wait for the first block to be
# gathered, hashed and written before their first byte, so blocks start small and double up
# to STREAM_BLOCK (4 MiB took 15 ms at 2.5 Gbit/s to gather; 256 KiB takes 1 ms).
FIRST_BLOCK = 256 << 10
MAX_PIECES = 512  # of a block: a writev takes at most IOV_MAX (1024) buffers
BLOB_RECEIVE = 1 << 20  # bytes a blob's connection may take per receive (`_read_larger`)


@dataclass(frozen=True)
class FetchedManifest:
    body: bytes | None  # None for HEAD
    digest: str | None  # the upstream's Docker-Content-Digest, when it sent one
    media_type: str
    size: int


@dataclass
class BlobStream:
    size: int  # the whole blob's size
    start: int  # offset of the first byte this stream yields
    _response: aiohttp.ClientResponse
    _metrics: NodeMetrics
    received: int = 0  # bytes read off the connection, the block being gathered included

    async def blocks(self) -> AsyncIterator[list[bytes]]:
        """The body in blocks of FIRST_BLOCK bytes, doubling up to STREAM_BLOCK (at most
        MAX_PIECES pieces), each a list of the pieces the connection delivered, kept as they
        came: nothing is copied."""
        block: list[bytes] = []
        buffered = 0
        target = FIRST_BLOCK
        try:
            async for data in self._pieces():
                block.append(data)
                buffered += len(data)
                if buffered >= target or len(block) >= MAX_PIECES:
                    yield block
                    block, buffered = [], 0
                    target = min(STREAM_BLOCK, 2 * target)
        except (aiohttp.ClientError, TimeoutError):
            # The bytes that did arrive are good: a resumed transfer starts after them.
            if block:
                yield block
            raise
        if block:
            yield block

    async def _pieces(self) -> AsyncIterator[bytes]:
        """The body as the connection delivered it: `readchunk` hands out each received piece
        as it is, where `iter_any` would join whatever is buffered into a copy."""
        content = self._response.content
        counter = self._metrics.upstream_bytes
        while True:
            data, end_of_http_chunk = await content.readchunk()
            if not data:
                if end_of_http_chunk:
                    continue
                return
            counter.inc(len(data))
            self.received += len(data)
            yield data


class UpstreamClient:
    def __init__(
        self,
        authenticator: Authenticator,
        metrics: NodeMetrics,
        timeout: float = 30.0,
        retries: int = 3,
        connections: int = 64,
        private_networks: tuple[Network, ...] = (),
    ) -> None:
        self._auth = authenticator
        self._metrics = metrics
        self._retries = retries
        self._connections = connections
        self._private_networks = private_networks
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=timeout, sock_read=timeout
        )
        # "" is the pool of the public registries; a configured registry's is under its ns.
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for session in sessions:
            await session.close()

    def _session(self, upstream: Upstream) -> aiohttp.ClientSession:
        key = upstream.ns if upstream.configured else ""
        session = self._sessions.get(key)
        if session is None:
            reach = Reach.for_url(upstream.base_url, self._private_networks) if key else Reach()
            session = self._sessions[key] = self._new_session(reach)
        return session

    def _new_session(self, reach: Reach) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._connections,
            ttl_dns_cache=60,
            resolver=AllowingResolver(reach),
            socket_factory=reach.socket_factory,
        )
        return aiohttp.ClientSession(
            timeout=self._timeout,
            auto_decompress=False,
            read_bufsize=4 << 20,  # the 64 KiB default pauses the socket every 128 KiB
            # Digests are over the bytes as stored: never let a server re-encode them.
            headers={"Accept-Encoding": "identity"},
            connector=connector,
        )

    async def manifest(
        self, upstream: Upstream, repo: str, reference: str, accept: list[str], head: bool = False
    ) -> FetchedManifest:
        path = f"/v2/{upstream.repository(repo)}/manifests/{reference}"
        headers = {"Accept": ", ".join(accept)}
        method = "HEAD" if head else "GET"
        async with self._open(method, upstream, repo, path, headers, ManifestUnknown) as response:
            size = response.content_length
            if size is not None and size > MAX_MANIFEST_BYTES:
                raise ManifestInvalid("upstream manifest too large", {"bytes": size})
            body = None if head else await self._read_limited(response, ManifestInvalid)
            return FetchedManifest(
                body=body,
                digest=response.headers.get("Docker-Content-Digest"),
                media_type=response.headers.get("Content-Type", "").split(";")[0].strip(),
                size=len(body) if body is not None else (size or 0),
            )

    async def tags(self, upstream: Upstream, repo: str) -> list[str]:
        """The repository's tags, following the upstream's pages (`Link: rel="next"` on the
        same registry), at most MAX_TAGS; a malformed tag is left out."""
        path: str | None = f"/v2/{upstream.repository(repo)}/tags/list?n={TAG_PAGE}"
        tags: list[str] = []
        while path is not None and len(tags) < MAX_TAGS:
            headers = {"Accept": "application/json"}
            async with self._open("GET", upstream, repo, path, headers, NotFound) as response:
                body = await self._read_limited(response, UpstreamUnavailable)
                path = _next_page(upstream, response.headers.get("Link", ""))
            try:
                listed = json.loads(body).get("tags") or []
            except (ValueError, AttributeError):
                raise UpstreamUnavailable("upstream sent a malformed tag list") from None
            if not isinstance(listed, list):
                raise UpstreamUnavailable("upstream sent a malformed tag list")
            tags += [t for t in listed if isinstance(t, str) and TAG.fullmatch(t)]
        return tags[:MAX_TAGS]

    async def _read_limited(
        self, response: aiohttp.ClientResponse, too_large: Callable[[str, object], NodeError]
    ) -> bytes:
        """A document's body, up to MAX_MANIFEST_BYTES; `too_large(message, detail)` past it."""
        body = bytearray()
        async for data in response.content.iter_any():
            body += data
            if len(body) > MAX_MANIFEST_BYTES:
                raise too_large("upstream answer too large", {"bytes": len(body)})
        return bytes(body)

    async def blob_size(self, upstream: Upstream, repo: str, digest: str) -> int:
        path = f"/v2/{upstream.repository(repo)}/blobs/{digest}"
        async with self._open("HEAD", upstream, repo, path, {}, BlobUnknown) as response:
            if response.content_length is None:
                raise UpstreamUnavailable("upstream sent no blob size", {"digest": digest})
            return response.content_length

    @asynccontextmanager
    async def blob(
        self, upstream: Upstream, repo: str, digest: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[BlobStream]:
        """The blob's bytes [start, end). `stream.start` is 0 when the upstream ignored the
        Range header (it then sends the whole blob)."""
        path = f"/v2/{upstream.repository(repo)}/blobs/{digest}"
        headers = {}
        if start or end is not None:
            last = "" if end is None else str(end - 1)
            headers["Range"] = f"bytes={start}-{last}"
        async with self._open("GET", upstream, repo, path, headers, BlobUnknown) as response:
            size, first = _extent(response, digest)
            _read_larger(response)
            yield BlobStream(size, first, response, self._metrics)

    @asynccontextmanager
    async def _open(
        self,
        method: str,
        upstream: Upstream,
        repo: str,
        path: str,
        headers: dict[str, str],
        not_found: type[NotFound],
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        response = await self._request(method, upstream, repo, path, headers, not_found)
        try:
            yield response
        except (aiohttp.ClientError, TimeoutError) as e:
            raise UpstreamUnavailable(
                f"upstream transfer failed: {e!r}", {"registry": upstream.ns}
            ) from None
        finally:
            response.release()

    async def _request(
        self,
        method: str,
        upstream: Upstream,
        repo: str,
        path: str,
        headers: dict[str, str],
        not_found: type[NotFound],
    ) -> aiohttp.ClientResponse:
        scope = pull_scope(upstream, repo)
        url = upstream.base_url + path
        session = self._session(upstream)
        answered: str | None = None
        failure = "no attempt made"
        attempt = 0
        while attempt <= self._retries:
            authorization = answered or await self._auth.prefetch(session, upstream, scope)
            request_headers = dict(headers)
            if authorization:
                request_headers["Authorization"] = authorization
            try:
                response = await session.request(method, url, headers=request_headers)
            except (aiohttp.ClientError, TimeoutError) as e:
                self._metrics.upstream_requests.labels(upstream.ns, "error").inc()
                if (reason := refusal(e)) is not None:
                    raise UpstreamRefused(reason, {"registry": upstream.ns}) from None
                failure = f"{type(e).__name__}: {e}"
            else:
                self._metrics.upstream_requests.labels(upstream.ns, status_label(response)).inc()
                if response.status in (200, 206):
                    return response
                challenge = response.headers.get("WWW-Authenticate", "")
                response.release()
                if response.status == 401 and challenge and answered is None:
                    answered = await self._auth.answer(session, upstream, scope, challenge)
                    if answered:
                        continue  # the answered retry is not an attempt of its own
                if response.status < 500:
                    raise _status_error(response, upstream, not_found)
                failure = f"upstream answered {response.status}"
            attempt += 1
            if attempt <= self._retries:
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt) * (0.5 + random.random()))
        log.warning(
            "upstream unavailable", extra={"registry": upstream.ns, "url": url, "error": failure}
        )
        raise UpstreamUnavailable(
            f"upstream {upstream.ns} unavailable: {failure}", {"registry": upstream.ns}
        )


def _read_larger(response: aiohttp.ClientResponse) -> None:
    """Let a blob's connection take up to BLOB_RECEIVE bytes per receive, where the event
    loop's transport has such a limit (asyncio's selector transport: `max_size`, 256 KiB).
    Each receive is a trip through the event loop, the HTTP parser and the stream, so fewer,
    larger ones cost less per byte. The connection keeps it when it goes back to the pool."""
    transport = response.connection.transport if response.connection else None
    if transport is not None and getattr(transport, "max_size", BLOB_RECEIVE) < BLOB_RECEIVE:
        setattr(transport, "max_size", BLOB_RECEIVE)  # noqa: B010 (not in Transport's type)


# The statuses a registry answers; any other is counted by its class, so an upstream cannot add
# label values to the node's metrics.
KNOWN_STATUSES = frozenset(
    {200, 206, 301, 302, 303, 307, 308, 400, 401, 403, 404, 405, 416, 429, 500, 502, 503, 504}
)


def status_label(response: aiohttp.ClientResponse) -> str:
    """The `code` label of an upstream answer: its status, or its class (`4xx`) if unusual."""
    status = response.status
    if status in KNOWN_STATUSES:
        return str(status)
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


def _status_error(
    response: aiohttp.ClientResponse, upstream: Upstream, not_found: type[NotFound]
) -> UpstreamError | NotFound:
    detail = {"registry": upstream.ns, "status": response.status}
    if response.status == 401:
        return UpstreamUnauthorized("the upstream registry requires authentication", detail)
    if response.status == 403:
        return UpstreamDenied("the upstream registry denied access", detail)
    if response.status == 404:
        return not_found(f"not found upstream at {upstream.ns}", detail)
    if response.status == 429:
        return UpstreamRateLimited(
            "the upstream registry's rate limit was reached", response.headers.get("Retry-After")
        )
    return UpstreamUnavailable(f"upstream answered {response.status}", detail)


def _next_page(upstream: Upstream, link: str) -> str | None:
    """The path of the next page a `Link` header names, when it is on the same registry."""
    target, _, params = link.partition(">")
    if 'rel="next"' not in params.replace(" ", ""):
        return None
    url = target.strip().removeprefix("<").removeprefix(upstream.base_url)
    return url if url.startswith("/v2/") else None


def _extent(response: aiohttp.ClientResponse, digest: str) -> tuple[int, int]:
    """(whole size, first byte) from Content-Range on a 206, Content-Length on a 200."""
    if response.status == 206:
        content_range = response.headers.get("Content-Range", "")
        try:
            span, _, total = content_range.removeprefix("bytes ").partition("/")
            return int(total), int(span.partition("-")[0])
        except ValueError:
            raise UpstreamUnavailable(
                "upstream sent a bad Content-Range", {"digest": digest}
            ) from None
    if response.content_length is None:
        raise UpstreamUnavailable("upstream sent no blob size", {"digest": digest})
    return response.content_length, 0
