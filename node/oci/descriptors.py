"""The content descriptors a manifest names (config, layers, child manifests), and the blob
sizes learnt from them, so a cold blob can be placed in the swarm before upstream is asked."""

from __future__ import annotations

import json

from distributed_images.recent import Recent
from node.oci.reference import SHA256

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
    """Blob sizes as the manifests of a repository declared them, so a cold blob of that
    repository can be placed in the swarm before the upstream is asked. A size is used only in
    the repository whose manifest declared it (another repository's manifest cannot set the size
    of a blob it names), never above `max_size`, and the oldest are forgotten first."""

    def __init__(self, max_size: int, limit: int = MAX_REMEMBERED) -> None:
        self._max_size = max_size
        self._sizes: Recent[tuple[str, str, str], int] = Recent(limit)

    def learn(self, ns: str, repo: str, manifest: bytes) -> None:
        for digest, size in descriptors(manifest):
            if size <= self._max_size:
                self._sizes.remember((ns, repo, digest), size)

    def get(self, ns: str, repo: str, digest: str) -> int | None:
        return self._sizes.get((ns, repo, digest))
