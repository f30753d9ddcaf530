"""One archive into the store.

Every blob goes through the store's writer, which checks its digest before it becomes visible;
each is pinned to the archive before it is written, so an eviction between two commits cannot
take it; manifests are stored last, after everything they name.

Plain tars and directories are read in place: members are copied with `pread`, several at a
time (`seed_workers`). A compressed tar is one stream: the first pass copies each blob whose
digest its name gives (OCI layouts) and keeps the JSON documents; when the digests of some
layers are known only from metadata that came after them (legacy `docker save` puts
`manifest.json` last), a second pass copies those. Reading, hashing and writing run in worker
threads (the store's writer hashing one block while the next is read), so the event loop keeps
serving.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import re
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import zstandard

from node.errors import ContentInvalid
from node.oci import mediatypes
from node.seed.errors import ArchiveInvalid, ArchiveTooLarge
from node.seed.formats import read_plan
from node.seed.plan import BlobNeed, Document, Plan
from node.seed.progress import Progress
from node.seed.sources import (
    BLOCK,
    DOCUMENT_LIMIT,
    Contents,
    DirectoryContents,
    StreamContents,
    TarContents,
    TarStream,
    compression,
    looks_like_json,
)
from node.store.contentstore import BlobWriter, ContentStore

log = logging.getLogger("node.seed")

KEPT_DOCUMENTS_LIMIT = 64 << 20  # JSON kept in memory during a pass over a compressed tar
# Bytes read ahead of the store's writer: local reads outrun hashing, so a few blocks keep the
# writer busy, and memory stays low however many blobs are copied at once.
IN_FLIGHT = 4 * BLOCK
MAKE_ROOM = (
    "free disk space under --data-dir, or raise --cache-max-bytes, or remove other archives: it"
    " is imported once there is room"
)
_OCI_BLOB = re.compile(r"blobs/sha256/([a-f0-9]{64})")
_UNREADABLE = (tarfile.TarError, EOFError, zlib.error, zstandard.ZstdError, gzip.BadGzipFile)


@dataclass(frozen=True)
class Imported:
    plan: Plan
    copied_blobs: int
    copied_bytes: int
    present_blobs: int  # already in the store: pinned, not copied again
    seconds: float


class ArchiveImport:
    def __init__(
        self, path: Path, name: str, owner: str, store: ContentStore, workers: asyncio.Semaphore
    ) -> None:
        self._path = path
        self._name = name
        self._owner = owner
        self._store = store
        self._workers = workers
        self._progress = Progress(name, 0)
        self._written: set[str] = set()
        self._copied_bytes = 0
        self._present = 0

    async def run(self) -> Imported:
        try:
            plan = await self._import()
        except ExceptionGroup as group:
            raise _reported(group.exceptions[0]) from None
        except Exception as e:
            raise _reported(e) from None
        return Imported(
            plan, len(self._written), self._copied_bytes, self._present, self._progress.seconds
        )

    async def _import(self) -> Plan:
        kind = None if self._path.is_dir() else await asyncio.to_thread(compression, self._path)
        plan = await (self._in_place() if kind is None else self._streamed(kind))
        for _, document in sorted(enumerate(plan.documents.values()), key=_store_order):
            self._store.pin(document.digest, self._owner)
            # Always put: it is small, and it records the media type the manifest is served with
            # (on a full disk, the copy already stored does).
            kept = await self._store.keep(document.digest, document.body, document.media_type)
            if not kept and self._store.stat(document.digest) is None:
                raise ArchiveTooLarge(
                    "too large for this node: no room for its manifests",
                    fix=MAKE_ROOM,
                    room=len(document.body),
                )
        return plan

    # -- plain tars and directories

    async def _in_place(self) -> Plan:
        contents: Contents
        if self._path.is_dir():
            contents = DirectoryContents(self._path)
        else:
            contents = await asyncio.to_thread(TarContents.read, self._path)
        plan = await asyncio.to_thread(read_plan, contents, self._name)
        self._progress.total = plan.blob_bytes
        self._check_room(sum(n.size for n in plan.blobs.values() if not self._stored(n.digest)))
        async with asyncio.TaskGroup() as group:
            for need in plan.blobs.values():
                group.create_task(self._copy_member(need))
        return plan

    async def _copy_member(self, need: BlobNeed) -> None:
        if not self._claim(need.digest, need.size):
            return
        async with self._workers:
            fd = await asyncio.to_thread(os.open, need.member.path, os.O_RDONLY)
            try:
                reader = _PositionalReader(fd, need.member.offset)
                read = reader.read
                await self._copy(need.digest, need.size, need.media_type, read, need.member.name)
            finally:
                os.close(fd)

    # -- compressed tars

    async def _streamed(self, kind: str) -> Plan:
        async with self._workers:  # a stream is one sequential job
            contents = await self._first_pass(kind)
            plan = await asyncio.to_thread(read_plan, contents, self._name)
            later: dict[str, BlobNeed] = {}
            for need in plan.blobs.values():
                if not self._claim(need.digest, need.size):
                    continue
                if contents.kept(need.member.name):
                    body = contents.document(need.member.name)
                    await self._put(need.digest, body, need.media_type, need.member.name)
                else:
                    later[need.member.name] = need
            if later:
                await self._second_pass(kind, later)
        return plan

    async def _first_pass(self, kind: str) -> StreamContents:
        documents: dict[str, bytes] = {}
        kept = 0
        stream = await self._open_stream(kind)
        try:
            while (member := await asyncio.to_thread(stream.next)) is not None:
                named = _OCI_BLOB.fullmatch(member.name)
                digest = "sha256:" + named.group(1) if named else None
                if member.size <= DOCUMENT_LIMIT:
                    body = await asyncio.to_thread(_read_exact, stream.reader(), member.size)
                    if looks_like_json(body):
                        kept += len(body)
                        if kept > KEPT_DOCUMENTS_LIMIT:
                            raise ArchiveInvalid("too many JSON documents", {"bytes": kept})
                        documents[member.name] = body
                    elif digest and self._claim(digest, member.size):
                        await self._put(digest, body, None, member.name)
                elif digest and self._claim(digest, member.size):
                    read = stream.reader().read
                    await self._copy(digest, member.size, None, read, member.name)
                self._progress.add(0)
        finally:
            await asyncio.to_thread(stream.close)
        return StreamContents(stream.listing, documents)

    async def _second_pass(self, kind: str, later: dict[str, BlobNeed]) -> None:
        log.info(
            "reading the compressed archive again for layers stored before its manifest.json",
            extra={"archive": self._name, "layers": len(later)},
        )
        stream = await self._open_stream(kind)
        try:
            while later and (member := await asyncio.to_thread(stream.next)) is not None:
                need = later.pop(member.name, None)
                if need is not None:
                    read = stream.reader().read
                    await self._copy(need.digest, need.size, need.media_type, read, member.name)
        finally:
            await asyncio.to_thread(stream.close)
        if later:
            raise ArchiveInvalid("the archive changed while it was read", {"missing": list(later)})

    async def _open_stream(self, kind: str) -> TarStream:
        stream = await asyncio.to_thread(TarStream, self._path, kind)
        size = self._path.stat().st_size
        self._progress = Progress(self._name, size, measure=stream.position)
        return stream

    # -- writing into the store

    def _stored(self, digest: str) -> bool:
        return digest in self._written or self._store.stat(digest) is not None

    def _check_room(self, size: int) -> None:
        """Refuse the archive before writing `size` more bytes the store cannot keep pinned. A
        plain tar or a directory is checked as a whole before anything is written; a compressed
        one (whose sizes come in stream order) before each blob."""
        refusal = self._store.no_room_to_pin(size)
        if refusal is not None:
            raise ArchiveTooLarge(f"too large for this node: {refusal}", fix=MAKE_ROOM, room=size)

    def _claim(self, digest: str, size: int) -> bool:
        """Pin the blob to this archive; whether it still has to be written."""
        self._store.pin(digest, self._owner)
        if digest in self._written:
            return False
        if self._store.stat(digest) is not None:
            self._present += 1
            self._progress.add(size)
            return False
        return True

    async def _put(self, digest: str, body: bytes, media_type: str | None, member: str) -> None:
        self._check_room(len(body))
        try:
            await self._store.put(digest, body, media_type)
        except ContentInvalid as e:
            raise _mismatch(e, member) from None
        self._done(digest, len(body))

    async def _copy(
        self,
        digest: str,
        size: int,
        media_type: str | None,
        read: Callable[[int], bytes],
        member: str,
    ) -> None:
        self._check_room(size)
        writer = self._store.begin(digest, size, media_type)
        try:
            await self._pump(read, writer)
            await writer.commit()
        except ContentInvalid as e:
            writer.abort()
            raise _mismatch(e, member) from None
        except BaseException:
            writer.abort()
            raise
        self._done(digest, size)

    def _done(self, digest: str, size: int) -> None:
        self._written.add(digest)
        self._copied_bytes += size

    async def _pump(self, read: Callable[[int], bytes], writer: BlobWriter) -> None:
        """Copy `writer.size` bytes. The writer hashes and writes in its own thread, behind
        `write` (which returns once a block is queued), so reading the next blocks here overlaps
        hashing the last ones."""
        done = 0
        while done < writer.size:
            block = await asyncio.to_thread(read, min(BLOCK, writer.size - done))
            if not block:
                raise ArchiveInvalid("truncated member", {"digest": writer.digest})
            await writer.write(block)
            done += len(block)
            self._progress.add(len(block))
            if writer.accepted - writer.written >= IN_FLIGHT:
                await writer.flush()


class _PositionalReader:
    """Reads forward from `offset` of an open file, with pread (no shared file position)."""

    def __init__(self, fd: int, offset: int) -> None:
        self._fd = fd
        self._position = offset

    def read(self, size: int) -> bytes:
        data = os.pread(self._fd, size, self._position)
        self._position += len(data)
        return data


def _read_exact(reader: IO[bytes], size: int) -> bytes:
    data = reader.read(size)
    if len(data) != size:
        raise ArchiveInvalid("truncated member")
    return data


def _store_order(item: tuple[int, Document]) -> tuple[int, int]:
    """Configs, then image manifests, then indexes, each after what it names (an index is
    planned before its children)."""
    position, document = item
    if document.media_type in mediatypes.INDEX_TYPES:
        return 2, -position
    return (1 if document.media_type in mediatypes.MANIFEST_TYPES else 0), -position


def _mismatch(error: ContentInvalid, member: str | None) -> ArchiveInvalid:
    detail = dict(error.detail) if isinstance(error.detail, dict) else {}
    if member is not None:
        detail["member"] = member
    return ArchiveInvalid(error.message, detail)


def _reported(error: BaseException) -> BaseException:
    """Errors of reading a broken archive, as ArchiveInvalid; anything else as it is."""
    if isinstance(error, ContentInvalid):
        return _mismatch(error, None)
    if isinstance(error, _UNREADABLE):
        return ArchiveInvalid(f"unreadable archive: {error}")
    return error
