"""The seeded tags: which archive holds which tag, and which one wins when two hold the same.

The rule for a tag found in several archives is the order of their paths: the archive whose
path (relative to the images directory) sorts last wins, as in a `conf.d` directory. It depends
on the directory's content only, so every node with the same archives serves the same digest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from node.seed.refs import ImageRef

log = logging.getLogger("node.seed")


@dataclass(frozen=True)
class Seeded:
    """One archive as imported."""

    name: str  # its path relative to the images directory
    owner: str  # its pin owner
    format: str
    tags: tuple[tuple[ImageRef, str], ...]
    images: tuple[str, ...]  # top-level manifest digests, tagged or not
    digests: frozenset[str]  # every blob and manifest it holds


class Catalog:
    def __init__(self) -> None:
        self._archives: dict[str, Seeded] = {}
        self._tags: dict[ImageRef, str] = {}
        self._conflicts: set[tuple[ImageRef, tuple[str, ...]]] = set()

    def put(self, seeded: Seeded) -> Seeded | None:
        """Add or replace an archive; returns the one it replaced."""
        previous = self._archives.get(seeded.name)
        self._archives[seeded.name] = seeded
        self._rebuild()
        return previous

    def remove(self, name: str) -> Seeded | None:
        seeded = self._archives.pop(name, None)
        if seeded is not None:
            self._rebuild()
        return seeded

    def get(self, name: str) -> Seeded | None:
        return self._archives.get(name)

    def archives(self) -> list[Seeded]:
        return [self._archives[name] for name in sorted(self._archives)]

    def lookup(self, ref: ImageRef) -> str | None:
        return self._tags.get(ref)

    def tags(self) -> dict[ImageRef, str]:
        return dict(self._tags)

    def _rebuild(self) -> None:
        holders: dict[ImageRef, list[tuple[str, str]]] = {}
        for name in sorted(self._archives):
            for ref, digest in self._archives[name].tags:
                holders.setdefault(ref, []).append((name, digest))
        self._tags = {ref: found[-1][1] for ref, found in holders.items()}
        conflicts = {
            (ref, tuple(name for name, _ in found))
            for ref, found in holders.items()
            if len({digest for _, digest in found}) > 1
        }
        for ref, names in sorted(conflicts - self._conflicts):
            log.warning(
                "the same tag in several archives: the last by path wins",
                extra={"tag": str(ref), "archives": ",".join(names), "winner": names[-1]},
            )
        self._conflicts = conflicts
