"""Preheat: pull an image onto this node ahead of a rollout, as ordered by the tracker.

The image's manifest (and, for an index, every child manifest) is resolved and each blob is
pulled into the store exactly as a client's pull would be, through the swarm when the cluster
has one, so a preheated node then serves the image from its cache and seeds it to the others.
A node preheats only what it may read itself: a private image needs the node's own credentials,
which the upstream checks first (node.access), as it would for a client of the node.
"""

from __future__ import annotations

import asyncio
import logging

from node.access import Access, Target
from node.blobs import Blobs
from node.manifests import Manifests
from node.oci import mediatypes
from node.oci.descriptors import descriptors
from node.oci.reference import Reference
from node.seed.refs import normalize
from node.upstream.registries import Registries, Upstream

log = logging.getLogger(__name__)


class Preheater:
    def __init__(
        self,
        registries: Registries,
        manifests: Manifests,
        blobs: Blobs,
        access: Access | None = None,
    ) -> None:
        self._registries = registries
        self._manifests = manifests
        self._blobs = blobs
        self._access = access

    async def preheat(self, image: str) -> None:
        name, _, digest = image.partition("@")
        ref = normalize(name if digest else image)
        if ref is None:
            raise ValueError(f"cannot preheat {image!r}: no repository")
        upstream = self._registries.resolve(ref.ns)
        reference = Reference.parse(digest or ref.tag)
        if self._access is not None:
            target = Target.manifest(reference.value)
            grant = await self._access.authorize(upstream, ref.repo, None, target)
            upstream = grant.upstream
        log.info("preheating", extra={"image": image})
        blobs = await self._manifest_blobs(upstream, ref.repo, reference)
        await asyncio.gather(*(self._blobs.fetch(upstream, ref.repo, d) for d in blobs))
        log.info("preheated", extra={"image": image, "blobs": len(blobs)})

    async def _manifest_blobs(
        self, upstream: Upstream, repo: str, reference: Reference
    ) -> set[str]:
        """Every blob the manifest needs, children of an index included."""
        accept = mediatypes.accepted([])
        manifest = await self._manifests.get(upstream, repo, reference, accept, head=False)
        assert manifest.body is not None
        if manifest.media_type not in mediatypes.INDEX_TYPES:
            return {digest for digest, _ in descriptors(manifest.body)}
        found: set[str] = set()
        for child, _ in descriptors(manifest.body):
            found |= await self._manifest_blobs(upstream, repo, Reference(child))
        return found
