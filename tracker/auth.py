"""The shared token every tracker RPC must carry, and TLS credentials for both ends.

The token travels as `authorization: Bearer <token>` call metadata. The standard gRPC health
service stays open so that probes (kubelet, load balancers) work without it.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from tracker.errors import ERROR_KEY, Unauthenticated

HEALTH_PREFIX = "/grpc.health.v1.Health/"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX):
            return handler
        presented = dict(details.invocation_metadata or ()).get("authorization", "")
        if isinstance(presented, str) and hmac.compare_digest(presented.encode(), self._expected):
            return handler
        return _denied(handler)


def _denied(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    error = Unauthenticated("missing or wrong token (authorization: Bearer <token>)")

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(error.code, error.message, trailing_metadata=((ERROR_KEY, error.kind),))

    async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await deny(request, context)
        yield None  # never reached: abort raises

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kwargs)
    return grpc.unary_unary_rpc_method_handler(deny, **kwargs)


def server_credentials(cert: Path, key: Path) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])


def channel_credentials(ca: Path | None) -> grpc.ChannelCredentials:
    """TLS to the tracker, trusting `ca` (a PEM file) or, without it, the system's roots."""
    return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes() if ca else None)
