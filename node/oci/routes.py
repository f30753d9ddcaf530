"""The registry API a node serves: the pull category of the OCI distribution spec, plus
/metrics, /healthz and /readyz. Handlers parse and validate, then ask `Manifests` and `Blobs`."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from node.access import Access, Grant, Target
from node.activity import Activity
from node.blobs import BlobHandle, Blobs
from node.errors import Unsupported, UpstreamDenied, UpstreamUnauthorized
from node.manifests import Manifests
from node.metrics import NodeMetrics
from node.oci import mediatypes, sending
from node.oci.errors import CHALLENGE, Handler, oci_errors
from node.oci.listing import Listing
from node.oci.ranges import parse_range
from node.oci.reference import Reference, is_namespace, validate_digest, validate_name
from node.prefetch import Prefetcher
from node.readiness import Readiness
from node.upstream.registries import Registries, Upstream

log = logging.getLogger(__name__)

NAME = r"{name:[^?#]+?}"
ENDPOINT = web.RequestKey("endpoint", str)


class RegistryAPI:
    def __init__(
        self,
        registries: Registries,
        manifests: Manifests,
        blobs: Blobs,
        metrics: NodeMetrics,
        readiness: Callable[[], Readiness],
        prefetcher: Prefetcher | None = None,
        listing: Listing | None = None,
        access: Access | None = None,
        activity: Activity | None = None,
    ) -> None:
        self._registries = registries
        self._manifests = manifests
        self._blobs = blobs
        self._metrics = metrics
        self._readiness = readiness
        self._prefetcher = prefetcher
        self._listing = listing
        self._access = access
        self._activity = activity or Activity()

    def probes_application(self) -> web.Application:
        """/metrics, /healthz and /readyz alone, for `--metrics-listen`: what Prometheus and the
        kubelet reach while the registry API listens on the host's loopback."""
        app = web.Application(middlewares=[self._observe])
        for endpoint, path, handler in self._probes():
            app.router.add_get(path, _named(endpoint, handler), allow_head=endpoint != "metrics")
        return app

    def _probes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("metrics", "/metrics", self.metrics),
            ("healthz", "/healthz", self.healthz),
            ("readyz", "/readyz", self.readyz),
        ]

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._observe, oci_errors])
        app.on_response_prepare.append(_registry_headers)
        probes = [
            (e, p, h, ("GET",) if e == "metrics" else ("GET", "HEAD")) for e, p, h in self._probes()
        ]
        routes = [
            ("base", "/v2/", self.base, ("GET", "HEAD")),
            ("base", "/v2", self.base, ("GET", "HEAD")),
            ("manifest", f"/v2/{NAME}/manifests/{{reference}}", self.manifest, ("GET", "HEAD")),
            ("blob", f"/v2/{NAME}/blobs/{{digest}}", self.blob, ("GET", "HEAD")),
            ("push", f"/v2/{NAME}/blobs/uploads/{{tail:.*}}", self.unsupported, ("*",)),
            ("push", f"/v2/{NAME}/manifests/{{reference}}", self.unsupported, ("PUT", "DELETE")),
            ("push", f"/v2/{NAME}/blobs/{{digest}}", self.unsupported, ("DELETE",)),
            *self._listing_routes(),
            ("other", "/v2/{tail:.*}", self.unsupported, ("*",)),
            *probes,
        ]
        for endpoint, path, handler, methods in routes:
            for method in methods:
                if method == "GET":
                    app.router.add_get(
                        path, _named(endpoint, handler), allow_head="HEAD" in methods
                    )
                elif method != "HEAD":
                    app.router.add_route(method, path, _named(endpoint, handler))
        return app

    def _listing_routes(self) -> list[tuple[str, str, Handler, tuple[str, ...]]]:
        if self._listing is None:
            return []
        return [
            ("tags", f"/v2/{NAME}/tags/list", self._listing.tags, ("GET", "HEAD")),
            ("catalog", "/v2/_catalog", self._listing.catalog, ("GET", "HEAD")),
        ]

    @web.middleware
    async def _observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            endpoint = request.get(ENDPOINT, "unmatched")
            self._metrics.requests.labels(endpoint, str(status)).inc()
            self._metrics.request_duration.labels(endpoint).observe(time.monotonic() - started)

    def _upstream(self, request: web.Request) -> Upstream:
        return self._registries.resolve(request.query.get("ns"))

    async def _authorized(self, request: web.Request, name: str, target: Target) -> Grant:
        """How the request may read the target: from which upstream, with whose credentials."""
        upstream = self._upstream(request)
        if self._access is None:
            return Grant(upstream)
        authorization = request.headers.get("Authorization")
        return await self._access.for_request(upstream, name, authorization, target)

    async def base(self, request: web.Request) -> web.Response:
        # A challenge on the 200: containers/image (podman, skopeo) reads it from this ping and
        # then sends the credentials it holds for this host; others meet it on a 401.
        return web.json_response({}, headers={"WWW-Authenticate": CHALLENGE})

    async def manifest(self, request: web.Request) -> web.StreamResponse:
        headers, body = await self._manifest(request)
        if body is None:
            return web.Response(headers=headers)
        response = web.StreamResponse(headers=headers)
        if isinstance(body, bytes):
            return await sending.send_bytes(request, response, body, "manifest")
        response.content_length = body.size
        await sending.transfer(request, response, body.pieces(0, body.size), "manifest", None, body)
        return response

    async def _manifest(
        self, request: web.Request
    ) -> tuple[dict[str, str], BlobHandle | bytes | None]:
        """The response's headers and what its body is sent from: the stored copy where there
        is one (a client that reads nothing then holds no copy of it in memory, up to 4 MiB a
        connection), else the bytes; None for a HEAD."""
        name = validate_name(request.match_info["name"])
        reference = Reference.parse(request.match_info["reference"])
        grant = await self._authorized(request, name, Target.manifest(reference.value))
        upstream = grant.upstream
        accept = mediatypes.accepted(request.headers.getall("Accept", []))
        head = request.method == "HEAD"
        try:
            manifest = await self._manifests.get(upstream, name, reference, accept, head)
        except (UpstreamUnauthorized, UpstreamDenied):
            if self._access is not None:
                self._access.refused(upstream, name)
            raise
        if self._access is not None:
            self._access.seen(grant, name, manifest.digest, manifest.body)
        self._activity.pulls.manifest(request.remote or "-", upstream.ns, name, reference.value)
        if self._prefetcher is not None:
            self._prefetcher.served(upstream, name, manifest)
        headers = {
            "Content-Type": manifest.media_type,
            "Docker-Content-Digest": manifest.digest,
            "ETag": f'"{manifest.digest}"',
            "Content-Length": str(manifest.size),
        }
        if head:
            return headers, None
        stored = self._blobs.stored(manifest.digest)
        return headers, stored if stored and stored.size == manifest.size else manifest.body

    async def blob(self, request: web.Request) -> web.StreamResponse:
        name = validate_name(request.match_info["name"])
        digest = validate_digest(request.match_info["digest"])
        upstream = (await self._authorized(request, name, Target.blob(digest))).upstream
        headers = {
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": digest,
            "ETag": f'"{digest}"',
            "Accept-Ranges": "bytes",
        }
        if request.method == "HEAD":
            size = await self._blobs.size(upstream, name, digest)
            return web.Response(headers={**headers, "Content-Length": str(size)})
        if self._prefetcher is not None:
            self._prefetcher.requested(digest)
        handle = await self._blobs.open(upstream, name, digest)
        span = parse_range(request.headers.get("Range"), handle.size)
        if span and handle.info is None:
            # A range of a blob still arriving waits until the whole blob is verified: a client
            # cannot check a part against the digest, so it gets no byte that was not checked.
            handle = await self._blobs.verified(handle)
        start, end = span or (0, handle.size)
        response = web.StreamResponse(status=206 if span else 200, headers=headers)
        response.content_length = end - start
        if span:
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{handle.size}"
        delivered: Counter[str] = Counter()

        def sent(position: int, length: int) -> None:
            source = handle.source_at(position)
            self._metrics.blob_bytes.labels(source).inc(length)
            self._activity.delivered(source, length)
            delivered[source] += length

        complete = False
        try:
            complete = await sending.transfer(
                request, response, handle.pieces(start, end), "blob", sent, handle, start
            )
        finally:
            client = request.remote or "-"
            self._activity.pulls.blob(client, upstream.ns, name, delivered, complete)
        return response

    async def unsupported(self, request: web.Request) -> web.Response:
        raise Unsupported("this registry is a pull-through mirror: push is not supported")

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        readiness = self._readiness()
        return web.Response(status=200 if readiness.ready else 503, text=readiness.text())


def _named(endpoint: str, handler: Handler) -> Handler:
    async def named(request: web.Request) -> web.StreamResponse:
        request[ENDPOINT] = endpoint
        return await handler(request)

    return named


async def _registry_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/v2"):
        response.headers["Docker-Distribution-API-Version"] = "registry/2.0"
        ns = request.query.get("ns")
        if ns and is_namespace(ns):  # never the client's bytes as they came: a header of its own
            response.headers["OCI-Namespace"] = ns
