"""OCI image layouts (`oci:` directories, `oci-archive:` tarballs, and Docker 25's `docker save`):
`index.json` names the images, `blobs/<algorithm>/<hex>` holds every blob.

Every manifest and index is read and checked against its digest here; configs and layers are
left to the store to check while they are copied. Tags come from the index's annotations:
containerd's `io.containerd.image.name` (a full reference), else
`org.opencontainers.image.ref.name`, which is either a full reference or a bare tag. A bare tag
names no repository, so such an image is reachable by digest only (and the log says so).
"""

from __future__ import annotations

import logging

from node.oci import mediatypes
from node.seed.documents import Descriptor, json_list, json_object, parse
from node.seed.errors import ArchiveInvalid
from node.seed.plan import BlobNeed, Plan
from node.seed.refs import is_bare_tag
from node.seed.sources import Contents

log = logging.getLogger(__name__)

CONTAINERD_NAME = "io.containerd.image.name"
REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_TYPES = (mediatypes.OCI_MANIFEST, mediatypes.DOCKER_MANIFEST)
MAX_DEPTH = 4  # an index of indexes of manifests is as deep as real images go


def blob_member(digest: str) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    return f"blobs/{algorithm}/{hex_digest}"


def read_layout(contents: Contents, archive: str) -> Plan:
    if contents.has("oci-layout"):
        json_object(parse(contents.document("oci-layout"), "oci-layout"), "oci-layout")
    index = json_object(parse(contents.document("index.json"), "index.json"), "index.json")
    plan = Plan("oci-layout")
    walker = _Walker(contents, plan)
    for i, item in enumerate(json_list(index.get("manifests", []), "index.json manifests")):
        descriptor = Descriptor.parse(item, f"index.json manifests[{i}]")
        if not walker.visit(descriptor, depth=0, required=True):
            continue
        plan.images.append(descriptor.digest)
        name = descriptor.annotations.get(CONTAINERD_NAME) or descriptor.annotations.get(REF_NAME)
        if name:
            _tag(plan, archive, name, descriptor.digest)
    return plan


def _tag(plan: Plan, archive: str, name: str, digest: str) -> None:
    if is_bare_tag(name):
        log.warning(
            "seeded image has a tag but no repository: reachable by digest only "
            "(name it in full, e.g. oci-archive:FILE:docker.io/library/app:1)",
            extra={"archive": archive, "tag": name, "digest": digest},
        )
        return
    plan.tag(name, digest, archive)


class _Walker:
    def __init__(self, contents: Contents, plan: Plan) -> None:
        self._contents = contents
        self._plan = plan

    def visit(self, descriptor: Descriptor, depth: int, required: bool) -> bool:
        """Plan a manifest or index and everything below it. A platform manifest absent from
        the archive is allowed (`required=False`: the image was saved for some platforms only);
        returns whether the descriptor is in the archive."""
        if depth > MAX_DEPTH:
            raise ArchiveInvalid("indexes nested too deep", {"digest": descriptor.digest})
        if descriptor.media_type not in mediatypes.MANIFEST_TYPES:
            log.debug("not an image, left out", extra={"digest": descriptor.digest})
            return False
        member = blob_member(descriptor.digest)
        if not required and not self._contents.has(member):
            log.info("platform manifest not in the archive", extra={"digest": descriptor.digest})
            return False
        body = self._read(descriptor)
        self._plan.document(descriptor.digest, body, descriptor.media_type)
        document = json_object(parse(body, f"manifest {descriptor.digest}"), descriptor.digest)
        declared = document.get("mediaType") or descriptor.media_type
        if declared != descriptor.media_type:
            raise ArchiveInvalid(
                "manifest media type differs from its descriptor",
                {"digest": descriptor.digest, "declared": declared},
            )
        if descriptor.media_type in mediatypes.INDEX_TYPES:
            self._index(document, descriptor, depth)
        else:
            self._image(document, descriptor)
        return True

    def _index(self, document: dict[str, object], descriptor: Descriptor, depth: int) -> None:
        children = json_list(document.get("manifests", []), f"index {descriptor.digest}")
        present = [
            self.visit(Descriptor.parse(child, f"index {descriptor.digest}"), depth + 1, False)
            for child in children
        ]
        if children and not any(present):
            raise ArchiveInvalid(
                "no manifest of the index is in the archive", {"digest": descriptor.digest}
            )

    def _image(self, document: dict[str, object], descriptor: Descriptor) -> None:
        what = f"manifest {descriptor.digest}"
        config = Descriptor.parse(document.get("config"), f"{what} config")
        self._blob(config)
        for i, layer in enumerate(json_list(document.get("layers", []), f"{what} layers")):
            self._blob(Descriptor.parse(layer, f"{what} layers[{i}]"), foreign_ok=True)

    def _blob(self, descriptor: Descriptor, foreign_ok: bool = False) -> None:
        name = blob_member(descriptor.digest)
        if foreign_ok and descriptor.urls and not self._contents.has(name):
            return  # a non-distributable layer, fetched from its URLs by the client
        member = self._contents.member(name)
        if member.size != descriptor.size:
            raise ArchiveInvalid(
                "blob size differs from its descriptor",
                {"digest": descriptor.digest, "size": member.size, "expected": descriptor.size},
            )
        self._plan.need(BlobNeed(descriptor.digest, member.size, descriptor.media_type, member))

    def _read(self, descriptor: Descriptor) -> bytes:
        body = self._contents.document(blob_member(descriptor.digest))
        if len(body) != descriptor.size:
            raise ArchiveInvalid(
                "manifest size differs from its descriptor",
                {"digest": descriptor.digest, "size": len(body), "expected": descriptor.size},
            )
        return body
