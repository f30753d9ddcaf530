"""Manifests from the other nodes of the cluster, for tags seeded somewhere in the cluster and
for when the upstream cannot answer.

A seeded tag is resolved by the tracker to a manifest digest and the nodes that hold it; the
manifest is then fetched from one of those nodes' registry API by digest, and checked against
that digest, so a node is trusted for nothing. The children of an index fetched this way are
remembered with the same nodes, so a client's next request (a platform's manifest by digest)
finds them too. Layers then come through the swarm as usual.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable

import aiohttp

from node.oci import mediatypes
from node.oci.descriptors import descriptors
from node.p2p.swarm import Swarm
from node.recent import Recent
from node.upstream.client import MAX_MANIFEST_BYTES
from node.upstream.registries import Upstream
from tracker.errors import TrackerError

log = logging.getLogger(__name__)

PEER_TIMEOUT = aiohttp.ClientTimeout(total=10)
MAX_HINTS = 10_000


class PeerManifests:
    def __init__(self, swarm: Swarm, http: Callable[[], aiohttp.ClientSession]) -> None:
        self._swarm = swarm
        self._http = http
        self._holders: Recent[str, tuple[str, ...]] = Recent(MAX_HINTS)  # digest -> registries

    async def by_tag(self, upstream: Upstream, repo: str, tag: str) -> tuple[str, bytes] | None:
        """(digest, body) of a tag seeded on another node, or None."""
        cluster = self._swarm.cluster()
        if cluster is None:
            return None
        client, node_id = cluster
        ref = f"{upstream.ns}/{upstream.repository(repo)}:{tag}"
        try:
            resolutions = await client.resolve(ref, node_id)
        except TrackerError as e:
            log.debug("resolve failed", extra={"ref": ref, "error": e.message})
            return None
        for resolution in resolutions:
            registries = tuple(n.registry for n in resolution.nodes if n.node_id != node_id)
            body = await self._from(registries, upstream, repo, resolution.digest)
            if body is not None:
                log.info("manifest from a peer", extra={"ref": ref, "digest": resolution.digest})
                return resolution.digest, body
        return None

    async def by_digest(self, upstream: Upstream, repo: str, digest: str) -> bytes | None:
        """A manifest a peer was seen to hold (a child of an index fetched from it)."""
        registries = self._holders.get(digest)
        if not registries:
            return None
        return await self._from(registries, upstream, repo, digest)

    async def _from(
        self, registries: tuple[str, ...], upstream: Upstream, repo: str, digest: str
    ) -> bytes | None:
        for registry in registries:
            url = f"http://{registry}/v2/{repo}/manifests/{digest}"
            headers = {"Accept": ", ".join(mediatypes.MANIFEST_TYPES)}
            body = None
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self._http().get(
                    url, params={"ns": upstream.ns}, headers=headers, timeout=PEER_TIMEOUT
                ) as response:
                    if response.status == 200:
                        body = await response.content.read(MAX_MANIFEST_BYTES + 1)
            if body is not None and "sha256:" + hashlib.sha256(body).hexdigest() == digest:
                self._remember_children(body, registries)
                return body
            log.debug("peer had no good manifest", extra={"peer": registry, "digest": digest})
        return None

    def _remember_children(self, body: bytes, registries: tuple[str, ...]) -> None:
        for child, _ in descriptors(body):
            self._holders.remember(child, registries)
