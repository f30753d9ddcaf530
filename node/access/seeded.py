"""Content an images directory brought into the cluster: the operator's, open to every client of
a node, whatever the upstream says of its repository (it may not even have it: Docker Hub answers
401 for a repository it does not have, as it does for a private one)."""

from __future__ import annotations

import logging

from node.p2p.swarm import Swarm
from node.seed import Seeds
from node.store.contentstore import ContentStore
from node.upstream.registries import Upstream
from tracker.errors import TrackerError

log = logging.getLogger(__name__)


class SeededContent:
    def __init__(self, store: ContentStore, swarm: Swarm, seeds: Seeds | None) -> None:
        self._store = store
        self._swarm = swarm
        self._seeds = seeds

    def tag_here(self, upstream: Upstream, repository: str, tag: str) -> bool:
        """Whether this node seeds the tag."""
        return self._seeds is not None and bool(self._seeds.lookup(upstream.ns, repository, tag))

    async def tag(self, upstream: Upstream, repository: str, tag: str) -> bool:
        """Whether the tag is seeded here or on another node of the cluster."""
        if self.tag_here(upstream, repository, tag):
            return True
        cluster = self._swarm.cluster()
        if cluster is None:
            return False
        client, node_id = cluster
        ref = f"{upstream.ns}/{repository}:{tag}"
        try:
            return bool(await client.resolve(ref, node_id))
        except TrackerError as e:
            log.debug("resolve failed", extra={"ref": ref, "error": e.message})
            return False

    def content(self, digest: str) -> bool:
        """Whether the blob or manifest is pinned here by an archive of the images directory."""
        return self._store.pinned(digest)
