"""The files inside an archive, named by their path from the archive's root.

An archive is never extracted: its members are read in place. So the only unsafe thing a name
can do is point outside the archive, through `..`, an absolute path, or a link whose target
leaves it; any such member makes the whole archive refused, referenced or not, since nothing
honest writes one. Links inside the archive are followed (skopeo's docker-archive links each
legacy `<id>/layer.tar` to the layer file).
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from node.seed.errors import ArchiveInvalid, ArchiveUnsupported

MAX_LINK_HOPS = 16
END_BLOCK = bytes(tarfile.BLOCKSIZE)
LINK = "a link"


@dataclass(frozen=True)
class Member:
    """A regular file of an archive: `size` bytes at `offset` in the file `path` (the archive
    itself for a plain tar, the blob's own file in a directory). A member of a compressed
    archive has no offset (-1): its bytes come only in stream order."""

    name: str
    size: int
    path: Path
    offset: int


def clean(name: str, base: str = "", what: str = "a member path") -> str:
    """`name` (relative to the directory `base`) as a normalized path from the archive's root."""
    path = posixpath.normpath(posixpath.join(base, name))
    if name.startswith("/") or "\0" in name or path == ".." or path.startswith("../"):
        raise ArchiveInvalid(f"{what} leaves the archive", {"member": name[:200]})
    return path


class Listing:
    """The members of a tar archive, and its links, as read from its headers."""

    def __init__(self, path: Path, seekable: bool) -> None:
        self.path = path
        self.seekable = seekable
        self._files: dict[str, Member] = {}
        self._links: dict[str, str] = {}
        self._others: set[str] = set()

    def add(self, info: tarfile.TarInfo) -> Member | None:
        """Record one header; returns the member when it is a regular file."""
        name = clean(info.name)
        if name == ".":
            return None
        self._forget(name)
        if info.issym():
            self._links[name] = clean(info.linkname, posixpath.dirname(name), LINK)
        elif info.islnk():
            self._links[name] = clean(info.linkname, what=LINK)
        elif info.isreg() and not info.sparse:
            offset = info.offset_data if self.seekable else -1
            member = Member(name, info.size, self.path, offset)
            self._files[name] = member
            return member
        elif not info.isdir():
            self._others.add(name)
        return None

    def _forget(self, name: str) -> None:
        # A later header for the same name replaces the earlier one (tar semantics).
        self._files.pop(name, None)
        self._links.pop(name, None)
        self._others.discard(name)

    def has(self, name: str) -> bool:
        return resolves(self.member, name)

    def member(self, name: str) -> Member:
        path = clean(name)
        for _ in range(MAX_LINK_HOPS):
            if path in self._files:
                return self._files[path]
            if path in self._others:
                raise ArchiveUnsupported("not a regular file", {"member": path})
            if path not in self._links:
                raise ArchiveInvalid("missing from the archive", {"member": path})
            path = self._links[path]
        raise ArchiveInvalid("too many links", {"member": name})


class CheckedTarInfo(tarfile.TarInfo):
    """Headers that refuse what `tarfile` would take for the end of the archive.

    `tarfile` stops quietly at a corrupt or short header, as if the archive ended there, so a
    truncated archive would look complete. Only the end-of-archive zero block ends it here.
    """

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        if buf == END_BLOCK:
            return super().frombuf(buf, encoding, errors)  # raises: the end of the archive
        if len(buf) < tarfile.BLOCKSIZE:
            raise ArchiveInvalid("truncated: the archive ends before its end marker")
        try:
            return super().frombuf(buf, encoding, errors)
        except tarfile.HeaderError as e:
            raise ArchiveInvalid(f"corrupt tar header: {e}") from None


def resolves(member: Callable[[str], Member], name: str) -> bool:
    """Whether `member(name)` finds a regular file (links followed) rather than raising."""
    try:
        member(name)
    except ArchiveInvalid:
        return False
    return True
