"""Manifests by tag or digest. Tags move, so a tag is asked of the upstream each time and
served from the cache only when the upstream fails (stale-if-error); a digest never changes,
so a stored manifest is served as it is. Every manifest's digest is checked before it is
stored or served."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from node.errors import ContentInvalid, UpstreamRateLimited, UpstreamUnavailable
from node.metrics import NodeMetrics
from node.oci import mediatypes
from node.oci.descriptors import Sizes
from node.oci.reference import Reference
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
        self, store: ContentStore, upstream: UpstreamClient, metrics: NodeMetrics, sizes: Sizes
    ) -> None:
        self._store = store
        self._upstream = upstream
        self._metrics = metrics
        self._sizes = sizes

    async def get(
        self, upstream: Upstream, repo: str, reference: Reference, accept: list[str], head: bool
    ) -> Manifest:
        manifest = await self._get(upstream, repo, reference, accept, head)
        if manifest.body is not None:
            self._sizes.learn(manifest.body)
        return manifest

    async def _get(
        self, upstream: Upstream, repo: str, reference: Reference, accept: list[str], head: bool
    ) -> Manifest:
        if reference.is_digest:
            stored = await self._stored(reference.value, head)
            if stored:
                return stored
            return await self._fetch(upstream, repo, reference.value, accept)
        try:
            return await self._by_tag(upstream, repo, reference.value, accept, head)
        except (UpstreamUnavailable, UpstreamRateLimited) as e:
            stale = self._store.tag(upstream.ns, upstream.repository(repo), reference.value)
            manifest = await self._stored(stale.digest, head) if stale else None
            if manifest is None:
                raise
            self._metrics.stale_manifests.inc()
            log.warning(
                "upstream failed, serving the cached tag",
                extra={
                    "registry": upstream.ns,
                    "repo": repo,
                    "tag": reference.value,
                    "error": e.message,
                },
            )
            return manifest

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
        body = await self._store.read_all(digest)
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
        media_type = fetched.media_type
        if media_type not in mediatypes.MANIFEST_TYPES:
            media_type = mediatypes.sniff(fetched.body)
        await self._store.put(digest, fetched.body, media_type)
        return Manifest(digest, media_type, len(fetched.body), fetched.body)
