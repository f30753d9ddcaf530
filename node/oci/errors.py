"""Domain errors to OCI wire errors: one table, one place that writes the error envelope."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from node import errors

log = logging.getLogger(__name__)

# Every 401 says how to authenticate: containerd, Docker and containers/image answer a Basic
# challenge with the credentials they hold for this host (see node.access).
CHALLENGE = 'Basic realm="distributed-images"'

# Most specific first: the first class an error is an instance of decides.
WIRE: list[tuple[type[errors.NodeError], int, str]] = [
    (errors.NameInvalid, 400, "NAME_INVALID"),
    (errors.ReferenceInvalid, 400, "TAG_INVALID"),
    (errors.DigestInvalid, 400, "DIGEST_INVALID"),
    (errors.RangeInvalid, 416, "RANGE_INVALID"),
    (errors.PaginationInvalid, 400, "PAGINATION_NUMBER_INVALID"),
    (errors.Unsupported, 405, "UNSUPPORTED"),
    (errors.InvalidRequest, 400, "UNSUPPORTED"),
    (errors.BlobUnknown, 404, "BLOB_UNKNOWN"),
    (errors.ManifestUnknown, 404, "MANIFEST_UNKNOWN"),
    (errors.RegistryNotMirrored, 404, "NAME_UNKNOWN"),
    (errors.NotFound, 404, "NAME_UNKNOWN"),
    (errors.ManifestInvalid, 502, "MANIFEST_INVALID"),
    (errors.ContentInvalid, 502, "DIGEST_INVALID"),
    (errors.StoreFull, 503, "UNAVAILABLE"),  # streamed through instead: should never be seen
    (errors.CredentialsRequired, 401, "UNAUTHORIZED"),
    (errors.UpstreamUnauthorized, 401, "UNAUTHORIZED"),
    (errors.UpstreamDenied, 403, "DENIED"),
    (errors.UpstreamRateLimited, 429, "TOOMANYREQUESTS"),
    (errors.UpstreamUnavailable, 503, "UNAVAILABLE"),
    (errors.UpstreamRefused, 502, "UNAVAILABLE"),
    (errors.NodeError, 500, "UNKNOWN"),
]


def wire(error: errors.NodeError) -> tuple[int, str]:
    for kind, status, code in WIRE:
        if isinstance(error, kind):
            return status, code
    return 500, "UNKNOWN"


def error_response(error: errors.NodeError) -> web.Response:
    status, code = wire(error)
    entry: dict[str, object] = {"code": code, "message": error.message}
    if error.detail is not None:
        entry["detail"] = error.detail
    response = web.Response(
        status=status,
        body=json.dumps({"errors": [entry]}).encode(),
        content_type="application/json",
    )
    if isinstance(error, errors.UpstreamRateLimited) and error.retry_after:
        response.headers["Retry-After"] = error.retry_after
    if status == 401:
        response.headers["WWW-Authenticate"] = CHALLENGE
    if isinstance(error, errors.RangeInvalid):
        response.headers["Content-Range"] = f"bytes */{error.size}"
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def oci_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.NodeError as e:
        status, code = wire(e)
        log.log(
            logging.WARNING if status >= 500 else logging.INFO,
            "request failed",
            extra={"path": request.path, "code": code, "error": e.message},
        )
        return error_response(e)
