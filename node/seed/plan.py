"""What importing an archive means, worked out from its metadata before any layer is read:
which members become which blobs, which documents are stored, which tags point where."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from node.errors import NodeError
from node.seed.errors import ArchiveInvalid
from node.seed.members import Member
from node.seed.refs import ImageRef, normalize

log = logging.getLogger(__name__)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class BlobNeed:
    """A blob copied from a member of the archive; the store checks its digest."""

    digest: str
    size: int
    media_type: str | None
    member: Member


@dataclass(frozen=True)
class Document:
    """A manifest, index or config, already read (and checked against its digest)."""

    digest: str
    body: bytes
    media_type: str


@dataclass
class Plan:
    format: str
    blobs: dict[str, BlobNeed] = field(default_factory=dict)
    documents: dict[str, Document] = field(default_factory=dict)
    tags: list[tuple[ImageRef, str]] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # top-level manifest digests

    def need(self, blob: BlobNeed) -> None:
        known = self.blobs.get(blob.digest)
        if known is not None and known.size != blob.size:
            raise ArchiveInvalid(
                "one digest with two sizes",
                {"digest": blob.digest, "sizes": [known.size, blob.size]},
            )
        self.blobs.setdefault(blob.digest, blob)

    def tag(self, name: str, digest: str, archive: str) -> None:
        """Point the reference `name` at an image; a name that is no valid reference is
        logged and skipped (the image stays reachable by digest)."""
        try:
            ref = normalize(name)
        except NodeError as e:
            log.warning(
                "seeded image name is not a valid reference: reachable by digest only",
                extra={"archive": archive, "name": name, "error": e.message},
            )
            return
        if ref is not None:
            self.tags.append((ref, digest))

    def document(self, digest: str, body: bytes, media_type: str) -> None:
        if sha256(body) != digest:
            raise ArchiveInvalid("digest mismatch", {"digest": digest, "actual": sha256(body)})
        self.documents.setdefault(digest, Document(digest, body, media_type))

    @property
    def blob_bytes(self) -> int:
        return sum(blob.size for blob in self.blobs.values())

    def digests(self) -> frozenset[str]:
        return frozenset(self.blobs) | frozenset(self.documents)
