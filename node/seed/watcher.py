"""What the images directory holds right now, each archive with a fingerprint that changes when
the archive does.

An archive is a file (a tar, compressed or not), or a directory holding an `index.json` (an OCI
image layout) or a `manifest.json` (an extracted `docker save`). Other directories are searched,
a few levels deep; hidden entries (`.name`, as copies in progress are often named) are skipped.
A file is fingerprinted by size, modification time and inode, a directory by those of its
metadata file and of its blob directory, which change when a blob is added or removed.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

MAX_DEPTH = 4
SETTLE_SECONDS = 2.0  # an archive this long unchanged is taken as completely written
METADATA_FILES = ("index.json", "manifest.json")
LAYOUT_MARKERS = ("oci-layout", "blobs")


@dataclass(frozen=True)
class Found:
    name: str  # path relative to the images directory
    path: Path
    fingerprint: str
    modified: float  # newest modification time seen, seconds since the epoch

    @property
    def owner(self) -> str:
        """The pin owner: a stable id of this archive as it is now."""
        return f"seed:{self.name}@{self.fingerprint}"

    def settled(self, now: float | None = None) -> bool:
        return (now or time.time()) - self.modified >= SETTLE_SECONDS


def scan(root: Path) -> dict[str, Found]:
    """Every archive under `root`, by name; nothing (and no error) when `root` is missing."""
    found: dict[str, Found] = {}
    _scan_dir(root, root, 0, found)
    return found


def _scan_dir(root: Path, directory: Path, depth: int, found: dict[str, Found]) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        archive = look(root, path)
        if archive is not None:
            found[archive.name] = archive
        elif depth < MAX_DEPTH and path.is_dir() and not _looks_like_layout(path):
            _scan_dir(root, path, depth + 1, found)


def look(root: Path, path: Path) -> Found | None:
    """The archive at `path` as it is now, or None when there is none."""
    name = path.relative_to(root).as_posix()
    try:
        info = os.stat(path)
    except OSError:
        return None  # removed meanwhile, or a dangling link
    if stat.S_ISREG(info.st_mode):
        return Found(name, path, _print(info), info.st_mtime)
    if stat.S_ISDIR(info.st_mode):
        image = _image_dir(path)
        if image is not None:
            return Found(name, path, *image)
    return None


def _image_dir(path: Path) -> tuple[str, float] | None:
    for metadata in METADATA_FILES:
        try:
            parts = [os.stat(path / metadata), os.stat(path)]
        except OSError:
            continue
        with contextlib.suppress(OSError):
            parts.append(os.stat(path / "blobs" / "sha256"))
        return "+".join(_print(p) for p in parts), max(p.st_mtime for p in parts)
    return None


def _looks_like_layout(path: Path) -> bool:
    """A layout still being written (no index.json yet) is neither an archive nor searched."""
    return any((path / marker).exists() for marker in LAYOUT_MARKERS)


def _print(info: os.stat_result) -> str:
    return f"{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"
