"""Content an images directory brought into the cluster: the operator's, open to every client of
a node, whatever the upstream says of its repository (it may not even have it: Docker Hub answers
401 for a repository it does not have, as it does for a private one)."""

from __future__ import annotations

from node.p2p.swarm import Swarm
from node.seed import Seeds
from node.store.contentstore import ContentStore
from node.upstream.registries import Upstream


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
        return bool(await self._swarm.resolve(f"{upstream.ns}/{repository}:{tag}"))

    def content(self, digest: str) -> bool:
        """Whether the blob or manifest is pinned here by an archive of the images directory."""
        return self._store.pinned(digest)
