"""Manifests by tag or digest. A digest never changes, so a stored manifest is served as it is;
every manifest's digest is checked before it is stored or served.

What a tag means comes from its upstream or, on the node holding the archive, from the local
images directory (DESIGN section 10):
1. this node's images directory, when the seed precedence is seed-first;
2. the upstream, asked each time (tags move); its answer is remembered as the tag's value;
3. when the upstream fails: this node's images directory (upstream-first), then, when the
   upstream is unreachable, the tag's remembered value (stale-if-error), then, when the upstream
   is unreachable or has no such tag, a seeder elsewhere in the cluster (the tracker takes tags
   only from the nodes the operator named seeders). A seeder's answer is never remembered as the
   tag's value: the next request asks the upstream again.
An upstream that refuses the client (401, 403) is an answer: nothing else is tried."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from node.errors import (
    ContentInvalid,
    NodeError,
    NotFound,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from node.metrics import NodeMetrics
from node.oci import mediatypes
from node.oci.descriptors import Sizes
from node.oci.manifest import check_manifest
from node.oci.reference import Reference
from node.p2p.peermanifests import PeerManifests
from node.seed import Seeds
from node.store.contentstore import ContentStore
from node.upstream.client import UpstreamClient
from node.upstream.registries import Upstream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    size: int
    body: bytes | None  # None when only the headers were asked for


class Manifests:
    def __init__(
        self,
        store: ContentStore,
        upstream: UpstreamClient,
        metrics: NodeMetrics,
        sizes: Sizes,
        seeds: Seeds | None = None,
        peers: PeerManifests | None = None,
        seed_first: bool = True,
    ) -> None:
        self._store = store
        self._upstream = upstream
        self._metrics = metrics
        self._sizes = sizes
        self._seeds = seeds
        self._peers = peers
        self._seed_first = seed_first

    async def get(
        self, upstream: Upstream, repo: str, reference: Reference, accept: list[str], head: bool
    ) -> Manifest:
        if reference.is_digest:
            manifest = await self._by_digest(upstream, repo, reference.value, accept, head)
        else:
            manifest = await self._by_tag_anywhere(upstream, repo, reference.value, accept, head)
        if manifest.body is not None:
            self._sizes.learn(upstream.ns, upstream.repository(repo), manifest.body)
        return manifest

    async def _by_digest(
        self, upstream: Upstream, repo: str, digest: str, accept: list[str], head: bool
    ) -> Manifest:
        stored = await self._stored(digest, head)
        if stored:
            return stored
        try:
            return await self._fetch(upstream, repo, digest, accept)
        except (UpstreamUnavailable, UpstreamRateLimited, NotFound):
            body = await self._peers.by_digest(upstream, repo, digest) if self._peers else None
            if body is None:
                raise
            return await self._keep(digest, body)

    async def _by_tag_anywhere(
        self, upstream: Upstream, repo: str, tag: str, accept: list[str], head: bool
    ) -> Manifest:
        """The tag from the sources above, in their order."""

        async def local_seed() -> Manifest | None:
            return await self._seeded(upstream, repo, tag, head)

        async def cached() -> Manifest | None:
            stale = self._store.tag(upstream.ns, upstream.repository(repo), tag)
            manifest = await self._stored(stale.digest, head) if stale else None
            if manifest is not None:
                self._metrics.stale_manifests.inc()
            return manifest

        async def cluster_seed() -> Manifest | None:
            return await self._clustered(upstream, repo, tag)

        if self._seed_first and (found := await local_seed()):
            return found
        try:
            return await self._by_tag(upstream, repo, tag, accept, head)
        except NodeError as e:
            unreachable = isinstance(e, (UpstreamUnavailable, UpstreamRateLimited))
            fallbacks = [] if self._seed_first else [local_seed]
            if unreachable:
                fallbacks.append(cached)
            if unreachable or isinstance(e, NotFound):
                fallbacks.append(cluster_seed)
            for source in fallbacks:
                if found := await source():
                    log.warning(
                        "upstream did not answer for the tag, serving it from elsewhere",
                        extra={
                            "registry": upstream.ns,
                            "repo": repo,
                            "tag": tag,
                            "from": source.__name__,
                            "error": e.message,
                        },
                    )
                    return found
            raise

    async def _seeded(self, upstream: Upstream, repo: str, tag: str, head: bool) -> Manifest | None:
        if self._seeds is None:
            return None
        digest = self._seeds.lookup(upstream.ns, upstream.repository(repo), tag)
        return await self._stored(digest, head) if digest else None

    async def _clustered(self, upstream: Upstream, repo: str, tag: str) -> Manifest | None:
        found = await self._peers.by_tag(upstream, repo, tag) if self._peers else None
        return await self._keep(*found) if found else None

    async def _keep(self, digest: str, body: bytes) -> Manifest:
        """Store a manifest got from a peer (the store checks its digest)."""
        media_type = check_manifest(body)
        await self._store.keep(digest, body, media_type)
        return Manifest(digest, media_type, len(body), body)

    async def _by_tag(
        self, upstream: Upstream, repo: str, tag: str, accept: list[str], head: bool
    ) -> Manifest:
        if head:
            # A HEAD upstream is cheap (registries do not count it against rate limits); the
            # body is needed only when this node does not hold that digest yet.
            fetched = await self._upstream.manifest(upstream, repo, tag, accept, head=True)
            stored = await self._stored(fetched.digest, head) if fetched.digest else None
            if stored:
                self._remember(upstream, repo, tag, stored)
                return stored
        manifest = await self._fetch(upstream, repo, tag, accept)
        self._remember(upstream, repo, tag, manifest)
        return manifest

    def _remember(self, upstream: Upstream, repo: str, tag: str, manifest: Manifest) -> None:
        self._store.set_tag(
            upstream.ns, upstream.repository(repo), tag, manifest.digest, manifest.media_type
        )

    async def _stored(self, digest: str, head: bool) -> Manifest | None:
        info = self._store.stat(digest)
        if info is None:
            return None
        if head and info.media_type:
            return Manifest(digest, info.media_type, info.size, None)
        body = await self._store.content(digest)
        if body is None:
            return None
        media_type = info.media_type or mediatypes.sniff(body)
        return Manifest(digest, media_type, info.size, None if head else body)

    async def _fetch(
        self, upstream: Upstream, repo: str, reference: str, accept: list[str]
    ) -> Manifest:
        fetched = await self._upstream.manifest(upstream, repo, reference, accept)
        assert fetched.body is not None
        digest = "sha256:" + hashlib.sha256(fetched.body).hexdigest()
        expected = reference if ":" in reference else fetched.digest
        if expected and expected.startswith("sha256:") and expected != digest:
            raise ContentInvalid(
                "upstream manifest does not match its digest",
                {"expected": expected, "actual": digest},
            )
        media_type = check_manifest(fetched.body, fetched.media_type)
        await self._store.keep(digest, fetched.body, media_type)
        return Manifest(digest, media_type, len(fetched.body), fetched.body)
