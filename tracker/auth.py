"""Who is calling the tracker, what they may do, and TLS credentials for both ends.

Every call carries `authorization: Bearer <credential>` (`tracker.credentials`). The interceptor
identifies the caller and lets a call through only when:
- `Status`, `Preheat` and `PreheatStatus` come from an operator credential;
- every other method comes from a node credential, and the node id the request names is the
  caller's own: a node joins, leaves, announces, withdraws, publishes and watches only for itself;
- an announcement of seeded references comes from a node the operator named a seeder.
The caller is then `caller()` for the rest of the call (Publish needs it).

Without a cluster secret (a node's embedded tracker on loopback, tests) the tracker is open: a
caller is whoever its request says, and every rule above but the first still holds. The standard
gRPC health service stays open so that probes work without a credential.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from tracker.credentials import Identity, Role, Verifier
from tracker.errors import ERROR_KEY, PermissionDenied, TrackerError, Unauthenticated
from tracker.v1 import tracker_pb2 as pb

HEALTH_PREFIX = "/grpc.health.v1.Health/"
OPERATOR_METHODS = frozenset({"Status", "Preheat", "PreheatStatus"})


@dataclass(frozen=True)
class Caller:
    role: Role
    name: str  # the node id, for a node
    seeder: bool = False


OPEN = Caller(Role.OPERATOR, "")
_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("caller", default=OPEN)


def caller() -> Caller:
    """The caller of the RPC being served (`OPEN` outside one)."""
    return _caller.get()


def bearer(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


class Gate:
    """The rules above, apart from gRPC so that they read (and test) as plain code."""

    def __init__(self, verifier: Verifier | None, seeders: Collection[str]) -> None:
        self._verifier = verifier
        self._seeders = frozenset(seeders)

    def admit(self, method: str, authorization: str, request: Any) -> Caller:
        """The caller of `method` with `request`; raises `Unauthenticated` or `PermissionDenied`."""
        identity = self._identify(method, authorization, request)
        if (identity.role is Role.OPERATOR) != (method in OPERATOR_METHODS):
            needed = "an operator" if method in OPERATOR_METHODS else "a node"
            raise PermissionDenied(f"{method} needs {needed} credential")
        if identity.role is Role.OPERATOR:
            return Caller(identity.role, identity.name)
        claimed = _claimed_node(request)
        if claimed != identity.name:
            raise PermissionDenied(
                f"node {identity.name[:80]!r} may not act for node {claimed[:80]!r}"
            )
        seeder = identity.name in self._seeders
        if isinstance(request, pb.AnnounceRequest) and request.refs and not seeder:
            raise PermissionDenied(
                f"node {identity.name[:80]!r} may not announce seeded tags: the tracker's"
                " --seeder names the nodes that may"
            )
        return Caller(identity.role, identity.name, seeder)

    def _identify(self, method: str, authorization: str, request: Any) -> Identity:
        if self._verifier is None:
            if method in OPERATOR_METHODS:
                return Identity(Role.OPERATOR, "")
            return Identity(Role.NODE, _claimed_node(request))
        scheme, _, credential = authorization.partition(" ")
        identity = self._verifier.identify(credential) if scheme == "Bearer" else None
        if identity is None:
            raise Unauthenticated("missing or wrong credential (authorization: Bearer ...)")
        return identity


def _claimed_node(request: Any) -> str:
    if isinstance(request, pb.JoinRequest):
        return str(request.node.node_id)
    return str(getattr(request, "node_id", ""))


Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The gate in front of every method of the service. A method's guarded handler is made
    once and kept: the credential is read from each call's own metadata."""

    def __init__(self, gate: Gate, service_prefix: str) -> None:
        self._gate = gate
        self._prefix = service_prefix
        self._guarded: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        guarded = self._guarded.get(details.method)
        if guarded is not None:
            return guarded
        handler = await continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX):
            return handler
        guarded = self._guard(details.method.removeprefix(self._prefix), handler)
        self._guarded[details.method] = guarded
        return guarded

    def _guard(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }

        async def admitted(request: Any, context: grpc.aio.ServicerContext) -> None:
            try:
                _caller.set(self._gate.admit(method, _authorization(context), request))
            except TrackerError as error:
                trailing = ((ERROR_KEY, error.kind),)
                await context.abort(error.code, error.message, trailing_metadata=trailing)

        if handler.response_streaming:
            stream: Behavior = handler.unary_stream

            async def guarded_stream(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                await admitted(request, context)
                async for response in stream(request, context):
                    yield response

            return grpc.unary_stream_rpc_method_handler(guarded_stream, **kwargs)
        unary: Behavior = handler.unary_unary

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await admitted(request, context)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(guarded, **kwargs)


def _authorization(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else ""
    return ""


def server_credentials(cert: Path, key: Path) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])


def channel_credentials(ca: Path | None) -> grpc.ChannelCredentials:
    """TLS to the tracker, trusting `ca` (a PEM file) or, without it, the system's roots."""
    return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes() if ca else None)
