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

from node.oci.descriptors import descriptors
from node.recent import Recent

MAX_REPOSITORIES = 4096
MAX_DIGESTS = 4096  # per repository


class Contents:
    def __init__(self, repositories: int = MAX_REPOSITORIES, digests: int = MAX_DIGESTS) -> None:
        # digest -> whether it is open to every client (named by a seeded image's manifest)
        self._held: Recent[tuple[str, str], Recent[str, bool]] = Recent(repositories)
        self._digests = digests

    def saw(
        self, ns: str, repository: str, digest: str, body: bytes | None, seeded: bool = False
    ) -> None:
        """A manifest served under the repository: it and what it names belong there."""
        held = self._held.get((ns, repository))
        if held is None:
            held = Recent(self._digests)
        self._held.remember((ns, repository), held)
        for named in [digest, *(d for d, _ in (descriptors(body) if body else []))]:
            held.remember(named, seeded or bool(held.get(named)))

    def confirmed(self, ns: str, repository: str, digest: str) -> None:
        """The upstream answered for this digest in that repository."""
        self.saw(ns, repository, digest, None)

    def holds(self, ns: str, repository: str, digest: str) -> bool:
        held = self._held.get((ns, repository))
        return held is not None and digest in held

    def opened(self, ns: str, repository: str, digest: str) -> bool:
        """Named by a seeded image of the repository served here."""
        held = self._held.get((ns, repository))
        return held is not None and bool(held.get(digest))
