"""Which content each repository was seen to hold: the digests named by the manifests this node
served under that repository (the manifest itself, an index's children, an image's config and
layers). A digest opens a repository's content only if it is listed here or the upstream confirms
it there; knowing a digest is not enough. What a seeded image's manifest names is marked open:
the operator's content, served to every client.

In memory and bounded (clients choose repositories): a repository forgotten, or a node restarted,
learns its content again from the next manifest it serves there, which is how every pull starts;
until then the upstream is asked.
"""

from __future__ import annotations

from distributed_images.recent import Recent
from node.oci.descriptors import descriptors

MAX_ENTRIES = 200_000  # (registry, repository, digest) triples: about 40 MB at most


class Contents:
    def __init__(self, limit: int = MAX_ENTRIES) -> None:
        # -> whether the digest is open to every client (named by a seeded image's manifest)
        self._held: Recent[tuple[str, str, str], bool] = Recent(limit)

    def saw(
        self, ns: str, repository: str, digest: str, body: bytes | None, seeded: bool = False
    ) -> None:
        """A manifest served under the repository: it and what it names belong there."""
        for named in [digest, *(d for d, _ in (descriptors(body) if body else []))]:
            key = (ns, repository, named)
            self._held.remember(key, seeded or bool(self._held.get(key)))

    def confirmed(self, ns: str, repository: str, digest: str) -> None:
        """The upstream answered for this digest in that repository."""
        self.saw(ns, repository, digest, None)

    def holds(self, ns: str, repository: str, digest: str) -> bool:
        return (ns, repository, digest) in self._held

    def opened(self, ns: str, repository: str, digest: str) -> bool:
        """Named by a seeded image of the repository served here."""
        return bool(self._held.get((ns, repository, digest)))
