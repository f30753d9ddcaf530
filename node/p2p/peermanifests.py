"""Manifests from the other nodes of the cluster, for tags seeded somewhere in the cluster and
for when the upstream cannot answer.

A seeded tag is resolved by the tracker to a manifest digest, its size and the nodes that hold
it; the manifest is then pulled through the swarm like any blob (its holders seed it), checked
against its digest, so a node is trusted for nothing, and no node asks another's registry API
(which may listen on its host's loopback only). The children of an index pulled this way are
remembered with their sizes, so a client's next request (a platform's manifest by digest) finds
them too. Layers then come through the swarm as usual.
"""

from __future__ import annotations

import logging

from distributed_images.recent import Recent
from node.blobs import Blobs
from node.errors import NodeError
from node.oci.descriptors import descriptors
from node.p2p.swarm import Swarm
from node.store.contentstore import ContentStore
from node.upstream.client import MAX_MANIFEST_BYTES
from node.upstream.registries import Upstream

log = logging.getLogger(__name__)

MAX_HINTS = 10_000


class PeerManifests:
    def __init__(self, swarm: Swarm, blobs: Blobs, store: ContentStore) -> None:
        self._swarm = swarm
        self._blobs = blobs
        self._store = store
        self._children: Recent[str, int] = Recent(MAX_HINTS)  # digest -> size

    async def by_tag(self, upstream: Upstream, repo: str, tag: str) -> tuple[str, bytes] | None:
        """(digest, body) of a tag seeded on another node, or None."""
        ref = f"{upstream.ns}/{upstream.repository(repo)}:{tag}"
        for resolution in await self._swarm.resolve(ref):
            if not any(n.node_id != self._swarm.node_id for n in resolution.nodes):
                continue
            body = await self._pull(upstream, repo, resolution.digest, resolution.size)
            if body is not None:
                log.info("manifest from a peer", extra={"ref": ref, "digest": resolution.digest})
                return resolution.digest, body
        return None

    async def by_digest(self, upstream: Upstream, repo: str, digest: str) -> bytes | None:
        """A manifest a peer was seen to hold (a child of an index pulled from the cluster)."""
        size = self._children.get(digest)
        return await self._pull(upstream, repo, digest, size) if size else None

    async def _pull(self, upstream: Upstream, repo: str, digest: str, size: int) -> bytes | None:
        if not 0 < size <= MAX_MANIFEST_BYTES:
            return None
        try:
            await self._blobs.fetch(upstream, repo, digest, size)
            body = await self._store.read_all(digest)
        except (NodeError, OSError) as e:
            log.debug("no manifest from the cluster", extra={"digest": digest, "error": str(e)})
            return None
        for child, child_size in descriptors(body):
            self._children.remember(child, child_size)
        return body
