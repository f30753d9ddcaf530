"""The tracker's domain errors, and the one table that maps them to gRPC status codes.

The server raises these from its state code; the service turns them into a status (with the
trailing metadata `di-error: <kind>` naming the case) and the client turns that status back into
the same exception, so node code catches `NodeUnknown`, never a gRPC status code.

    TrackerError
    ├── InvalidArgument        malformed or oversized request            INVALID_ARGUMENT
    ├── NotFound                                                         NOT_FOUND
    │   ├── NodeUnknown        the node must join (again)
    │   └── TaskUnknown
    ├── FailedPrecondition                                               FAILED_PRECONDITION
    │   ├── MetainfoConflict   a chunk published with different metainfo
    │   ├── MetainfoUnconfirmed  metainfo from a node without the chunk's lease,
    │   │                      not (yet) published alike by a second node
    │   └── NoTargets          a preheat that matches no node
    ├── Unauthenticated        missing or wrong credential               UNAUTHENTICATED
    ├── PermissionDenied       a caller acting for another node, or      PERMISSION_DENIED
    │                          beyond its role (operator, seeder)
    └── TrackerUnavailable     (client side) unreachable or timed out    UNAVAILABLE
        └── StoreUnavailable   the tracker cannot reach its store
"""

from __future__ import annotations

import grpc


class TrackerError(Exception):
    """Base of every error of the tracker and its client."""

    kind = "tracker-error"
    code = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(TrackerError):
    kind = "invalid-argument"
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(TrackerError):
    kind = "not-found"
    code = grpc.StatusCode.NOT_FOUND


class NodeUnknown(NotFound):
    kind = "node-unknown"


class TaskUnknown(NotFound):
    kind = "task-unknown"


class FailedPrecondition(TrackerError):
    kind = "failed-precondition"
    code = grpc.StatusCode.FAILED_PRECONDITION


class MetainfoConflict(FailedPrecondition):
    kind = "metainfo-conflict"


class MetainfoUnconfirmed(FailedPrecondition):
    kind = "metainfo-unconfirmed"


class NoTargets(FailedPrecondition):
    kind = "no-targets"


class Unauthenticated(TrackerError):
    kind = "unauthenticated"
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(TrackerError):
    kind = "permission-denied"
    code = grpc.StatusCode.PERMISSION_DENIED


class TrackerUnavailable(TrackerError):
    kind = "unavailable"
    code = grpc.StatusCode.UNAVAILABLE


class StoreUnavailable(TrackerUnavailable):
    kind = "store-unavailable"


ERROR_KEY = "di-error"

_BY_KIND: dict[str, type[TrackerError]] = {
    cls.kind: cls
    for cls in (
        InvalidArgument,
        NotFound,
        NodeUnknown,
        TaskUnknown,
        FailedPrecondition,
        MetainfoConflict,
        MetainfoUnconfirmed,
        NoTargets,
        Unauthenticated,
        PermissionDenied,
        TrackerUnavailable,
        StoreUnavailable,
    )
}
_BY_CODE: dict[grpc.StatusCode, type[TrackerError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.RESOURCE_EXHAUSTED: InvalidArgument,  # e.g. a message over the size limit
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: TrackerUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: TrackerUnavailable,
    grpc.StatusCode.CANCELLED: TrackerUnavailable,
}


def from_status(code: grpc.StatusCode, details: str, kind: str | None) -> TrackerError:
    """The exception a client raises for a failed call."""
    cls = _BY_KIND.get(kind or "") or _BY_CODE.get(code, TrackerError)
    return cls(details or code.name.lower())
