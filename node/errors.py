"""The node's domain errors. The HTTP layer maps them to OCI error codes in one table
(`node.oci.errors`); nothing below the HTTP layer knows about status codes.

    NodeError
    ├── InvalidRequest            the client asked for something malformed
    │   ├── NameInvalid
    │   ├── ReferenceInvalid      a tag or digest that is not well-formed
    │   ├── DigestInvalid
    │   ├── RangeInvalid
    │   ├── PaginationInvalid     a list's `n` that is not a count
    │   └── Unsupported           push and other operations a mirror does not offer
    ├── NotFound
    │   ├── BlobUnknown
    │   │   └── BlobTooLarge      beyond --max-blob-size: the client gets it from the registry
    │   ├── ManifestUnknown
    │   └── RegistryNotMirrored   an `ns` this node is not configured for
    ├── ContentInvalid            bytes that do not match their digest or size: never stored
    │   └── ManifestInvalid       a "manifest" that is none (type, shape, size): never stored
    ├── StoreFull                 the local store cannot take a blob now (its disk is full or
    │                             read-only): the blob is streamed to the client unstored
    ├── CredentialsRequired       the repository needs credentials that the request lacks
    └── UpstreamError             the upstream registry failed us
        ├── UpstreamUnauthorized  401: missing or wrong credentials
        ├── UpstreamDenied        403
        ├── UpstreamRateLimited   429, with the upstream's Retry-After
        ├── UpstreamUnavailable   unreachable, timed out, or 5xx after retries
        └── UpstreamRefused       sent us to an address this node does not connect to
"""

from __future__ import annotations


class NodeError(Exception):
    """Base of every error the node reports to a client."""

    def __init__(self, message: str, detail: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class InvalidRequest(NodeError):
    pass


class NameInvalid(InvalidRequest):
    pass


class ReferenceInvalid(InvalidRequest):
    pass


class DigestInvalid(InvalidRequest):
    pass


class RangeInvalid(InvalidRequest):
    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class PaginationInvalid(InvalidRequest):
    pass


class Unsupported(InvalidRequest):
    pass


class NotFound(NodeError):
    pass


class BlobUnknown(NotFound):
    pass


class BlobTooLarge(BlobUnknown):
    pass


class ManifestUnknown(NotFound):
    pass


class RegistryNotMirrored(NotFound):
    pass


class ContentInvalid(NodeError):
    pass


class ManifestInvalid(ContentInvalid):
    pass


class StoreFull(NodeError):
    pass


class CredentialsRequired(NodeError):
    pass


class UpstreamError(NodeError):
    pass


class UpstreamUnauthorized(UpstreamError):
    pass


class UpstreamDenied(UpstreamError):
    pass


class UpstreamRateLimited(UpstreamError):
    def __init__(self, message: str, retry_after: str | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamUnavailable(UpstreamError):
    pass


class UpstreamRefused(UpstreamError):
    pass
