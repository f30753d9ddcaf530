"""The content descriptors a manifest names (config, layers, child manifests), and the blob
sizes learnt from them, so a cold blob can be placed in the swarm before upstream is asked."""

from __future__ import annotations

import json

from node.oci.reference import SHA256
from node.recent import Recent

MAX_REMEMBERED = 100_000


def descriptors(body: bytes) -> list[tuple[str, int]]:
    """(digest, size) of every descriptor in a manifest or index; [] for anything else."""
    return _described(body, ("config", "layers", "manifests"))


def layers(body: bytes) -> list[str]:
    """The digests of an image manifest's layers, in order."""
    return [digest for digest, _ in _described(body, ("layers",))]


def image_blobs(body: bytes) -> list[str]:
    """The digests of what pulling an image manifest fetches: its config, then its layers."""
    return [digest for digest, _ in _described(body, ("config", "layers"))]


def _described(body: bytes, keys: tuple[str, ...]) -> list[tuple[str, int]]:
    try:
        document = json.loads(body)
    except ValueError:
        return []
    if not isinstance(document, dict):
        return []
    found = []
    entries: list[object] = []
    for key in keys:
        listed = document.get(key)
        entries.extend(listed if isinstance(listed, list) else [listed])
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        digest, size = entry.get("digest"), entry.get("size")
        if (
            isinstance(digest, str)
            and SHA256.fullmatch(digest)
            and isinstance(size, int)
            and size >= 0
        ):
            found.append((digest, size))
    return found


class Sizes:
    """Blob sizes by digest, as manifests declared them; the oldest are forgotten first."""

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self._sizes: Recent[str, int] = Recent(limit)

    def learn(self, manifest: bytes) -> None:
        for digest, size in descriptors(manifest):
            self._sizes.remember(digest, size)

    def get(self, digest: str) -> int | None:
        return self._sizes.get(digest)
