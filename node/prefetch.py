"""Prefetch: once a client starts on an image's layers, the others and its config come in too,
before the client asks for them.

Clients ask for layers a few at a time (containerd three, skopeo copying into a directory one
by one) and for the next only once the last is written; without prefetch this node's upstream
and swarm would sit idle through those gaps, and a cold image would take longer than its bytes
need. Skopeo asks for the config only after the last layer: cold, it would cost a round through
the swarm at the very end of the pull. The first layer request is the sign of a pull: a manifest
(and config) alone is what inspecting tools and policy checks read, and brings nothing in. A
blob already stored or on its way is left alone; one the client asks for while it still waits
here starts at once on the client's request, and prefetch then only follows it. An image served
with a client's own credentials is not prefetched: those credentials serve that client's requests
only, and are not kept for later fetches (node.access).
"""

from __future__ import annotations

import asyncio
import logging

from distributed_images.recent import Recent
from node.blobs import Blobs
from node.errors import NodeError
from node.manifests import Manifest
from node.oci import mediatypes
from node.oci.descriptors import image_blobs, layers
from node.upstream.credential import Requester
from node.upstream.registries import Upstream

log = logging.getLogger(__name__)

MAX_QUEUED = 1024
MAX_REMEMBERED = 4096  # layers of manifests served lately, awaiting a first layer request


class Prefetcher:
    def __init__(self, blobs: Blobs, parallel: int) -> None:
        self._blobs = blobs
        self._parallel = parallel  # blobs fetched at once; 0: prefetch is off
        # A served manifest's config and layers, by each layer's digest: where to get them all.
        self._served: Recent[str, tuple[Upstream, str, tuple[str, ...]]] = Recent(MAX_REMEMBERED)
        self._queue: asyncio.Queue[tuple[Upstream, str, str]] = asyncio.Queue(MAX_QUEUED)
        self._queued: set[str] = set()
        self._workers: list[asyncio.Task[None]] = []

    def served(self, upstream: Upstream, repo: str, manifest: Manifest) -> None:
        """A client got this manifest: remember its blobs for when it asks for one of its layers.
        An index names manifests, not layers: the client picks its platform's, and that one
        counts."""
        if not self._parallel or manifest.body is None:
            return
        if isinstance(upstream.credential, Requester):
            return
        if manifest.media_type in mediatypes.INDEX_TYPES:
            return
        named = tuple(image_blobs(manifest.body))
        for layer in layers(manifest.body):
            self._served.remember(layer, (upstream, repo, named))

    def requested(self, digest: str) -> None:
        """A client asked for this blob: if it is a layer of a manifest served lately, the
        image is being pulled, so fetch that manifest's other blobs this node lacks."""
        found = self._served.get(digest)
        if found is None:
            return
        upstream, repo, named = found
        for blob in named:
            self._served.pop(blob)
        for blob in named:
            if blob == digest or blob in self._queued or self._blobs.present(blob):
                continue
            if self._queue.full():
                log.debug("prefetch queue full", extra={"digest": blob})
                break
            self._queued.add(blob)
            self._queue.put_nowait((upstream, repo, blob))
        while len(self._workers) < self._parallel:
            self._workers.append(asyncio.create_task(self._work(), name="prefetch"))

    async def _work(self) -> None:
        while True:
            upstream, repo, digest = await self._queue.get()
            try:
                if not self._blobs.present(digest):
                    log.debug("prefetching blob", extra={"digest": digest, "repo": repo})
                    await self._blobs.fetch(upstream, repo, digest)
            except Exception as e:  # a worker outlives any one blob's failure
                # The client's own request for the blob meets the same error and reports it.
                message = e.message if isinstance(e, NodeError) else repr(e)
                log.warning("prefetch failed", extra={"digest": digest, "error": message})
            finally:
                self._queued.discard(digest)

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
