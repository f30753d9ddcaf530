"""The store's metadata in SQLite: blobs with their access times, tags with their fetch times,
and pins. One connection owned by the event loop thread; every statement is small.

A blob's `durable` says its bytes are known to be on disk (fsynced before it was recorded, or
synced at a clean stop); `verified_at` is when its bytes last matched its digest, which orders
the scrub; `origins` says where a blob came from, so one found damaged can be fetched again.

SQLite can fail (a full disk fails every write): a statement marked tolerant then does nothing
or answers as if nothing were recorded (a cache miss), and `on_error` hears of it; the others
(what the store cannot do without: recording a blob, a pin) raise `sqlite3.Error`."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar, cast

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger(__name__)

# What SQLite says of a file that is not (or no longer) a whole database.
DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
# A database this large takes about a second to check at start with a cold page cache (172 MiB,
# the metadata of a TB of layers, took 2.6 s): the node says so, rather than seem to hang.
CHECK_NOTICE_BYTES = 64 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    media_type TEXT,
    stored_at REAL NOT NULL,
    accessed_at REAL NOT NULL,
    durable INTEGER NOT NULL DEFAULT 0,
    verified_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS blobs_by_access ON blobs (accessed_at);
CREATE TABLE IF NOT EXISTS tags (
    ns TEXT NOT NULL,
    repo TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    fetched_at REAL NOT NULL,
    PRIMARY KEY (ns, repo, tag)
);
CREATE TABLE IF NOT EXISTS torrents (
    digest TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    metainfo BLOB NOT NULL,
    PRIMARY KEY (digest, chunk)
);
CREATE TABLE IF NOT EXISTS pins (
    digest TEXT NOT NULL,
    owner TEXT NOT NULL,
    PRIMARY KEY (digest, owner)
);
CREATE TABLE IF NOT EXISTS origins (
    digest TEXT PRIMARY KEY,
    ns TEXT NOT NULL,
    repo TEXT NOT NULL
);
"""
# Columns added since the first schema: a store written before them is migrated at open, its
# blobs not known to be on disk (that version never fsynced).
_ADDED_COLUMNS = {
    "durable": "INTEGER NOT NULL DEFAULT 0",
    "verified_at": "REAL NOT NULL DEFAULT 0",
}


@dataclass(frozen=True)
class BlobRecord:
    digest: str
    size: int
    media_type: str | None
    accessed_at: float


@dataclass(frozen=True)
class TagRecord:
    digest: str
    media_type: str
    fetched_at: float


def _tolerant(
    default: Callable[[], object],
) -> Callable[[Callable[Concatenate[Metadata, P], T]], Callable[Concatenate[Metadata, P], T]]:
    """On an SQLite error: report it and answer `default()`."""

    def wrap(
        method: Callable[Concatenate[Metadata, P], T],
    ) -> Callable[Concatenate[Metadata, P], T]:
        def run(metadata: Metadata, /, *args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return method(metadata, *args, **kwargs)
            except sqlite3.Error as e:
                if metadata.on_error is not None:
                    metadata.on_error(e)
                return cast(T, default())

        return run

    return wrap


def _nothing() -> None:
    return None


class _Damaged(sqlite3.DatabaseError):
    """What quick_check found wrong."""


def open_metadata(path: Path) -> Metadata:
    """The store's metadata at `path`. A database damaged on disk (a torn write, a bad sector)
    is set aside, renamed with the time, and an empty one made: the store then records its blobs
    again from their files, each verified before it is served. Other errors (a locked or
    unreadable file) are raised."""
    try:
        return Metadata(path, check=True)
    except sqlite3.DatabaseError as e:
        if not isinstance(e, _Damaged) and getattr(e, "sqlite_errorcode", None) not in DAMAGED:
            raise
        error = e
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    path.rename(aside)
    for suffix in ("-wal", "-shm"):  # the old file's journal is no journal of the new one
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    log.warning(
        "the store's metadata was damaged: set aside, and the blobs on disk recorded again"
        " (each verified before it is served)",
        extra={"error": str(error), "set_aside": str(aside)},
    )
    return Metadata(path)


class Metadata:
    def __init__(self, path: Path | None, check: bool = False) -> None:
        """`path=None` keeps everything in memory (the in-memory store's twin). `check`: read the
        whole database once (SQLite's quick_check), so damage shows now, not mid-request."""
        self.on_error: Callable[[sqlite3.Error], None] | None = None
        self._db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None)
        try:
            self._prepare(check, path)
        except sqlite3.Error:
            self._db.close()
            raise

    def _prepare(self, check: bool, path: Path | None) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(blobs)")}
        for name, definition in _ADDED_COLUMNS.items():
            if name not in columns:
                self._db.execute(f"ALTER TABLE blobs ADD COLUMN {name} {definition}")
        self._db.execute("CREATE INDEX IF NOT EXISTS blobs_by_verification ON blobs (verified_at)")
        if check and path is not None:
            self._check(path)

    def _check(self, path: Path) -> None:
        size = path.stat().st_size
        noticed = size >= CHECK_NOTICE_BYTES
        if noticed:
            log.info("checking the store's metadata", extra={"mib": size >> 20})
        started = time.monotonic()
        found = [row[0] for row in self._db.execute("PRAGMA quick_check")]
        if found != ["ok"]:
            raise _Damaged(f"quick_check: {'; '.join(found[:3])}")
        if noticed:
            seconds = round(time.monotonic() - started, 1)
            log.info("the store's metadata is whole", extra={"seconds": seconds})

    def close(self) -> None:
        self._checkpoint()
        self._db.close()

    @_tolerant(_nothing)
    def _checkpoint(self) -> None:
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def add_blob(self, digest: str, size: int, media_type: str | None, durable: bool) -> None:
        """Record a blob whose bytes were just verified (`durable`: and are on disk)."""
        now = time.time()
        self._db.execute(
            "INSERT INTO blobs (digest, size, media_type, stored_at, accessed_at, durable, "
            "verified_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(digest) DO UPDATE SET "
            "media_type = coalesce(excluded.media_type, media_type), accessed_at = ?",
            (digest, size, media_type, now, now, int(durable), now, now),
        )

    @_tolerant(_nothing)
    def add_found_blob(self, digest: str, size: int) -> None:
        """Record a blob found on disk with no record: neither verified nor known on disk."""
        now = time.time()
        self._db.execute(
            "INSERT OR IGNORE INTO blobs (digest, size, media_type, stored_at, accessed_at) "
            "VALUES (?, ?, NULL, ?, ?)",
            (digest, size, now, now),
        )

    @_tolerant(list)
    def not_durable(self) -> list[str]:
        """Blobs whose bytes are not known to be on disk."""
        return [row[0] for row in self._db.execute("SELECT digest FROM blobs WHERE durable = 0")]

    @_tolerant(_nothing)
    def set_durable(self, digests: list[str], durable: bool = True) -> None:
        """Whether the blobs' bytes are known to be on disk (not: verified at the next start)."""
        self._db.executemany(
            "UPDATE blobs SET durable = ? WHERE digest = ?",
            [(int(durable), digest) for digest in digests],
        )

    @_tolerant(_nothing)
    def set_verified(self, digest: str) -> None:
        self._db.execute("UPDATE blobs SET verified_at = ? WHERE digest = ?", (time.time(), digest))

    @_tolerant(_nothing)
    def least_recently_verified(self, before: float, excluded: set[str]) -> BlobRecord | None:
        """The blob verified longest ago, if that was before `before` (not one of `excluded`)."""
        rows = self._db.execute(
            "SELECT digest, size, media_type, accessed_at FROM blobs WHERE verified_at < ? "
            "ORDER BY verified_at",
            (before,),
        )
        for row in rows:
            if row[0] not in excluded:
                return BlobRecord(*row)
        return None

    @_tolerant(_nothing)
    def blob(self, digest: str) -> BlobRecord | None:
        row = self._db.execute(
            "SELECT digest, size, media_type, accessed_at FROM blobs WHERE digest = ?", (digest,)
        ).fetchone()
        return BlobRecord(*row) if row else None

    @_tolerant(_nothing)
    def touch(self, digest: str) -> None:
        self._db.execute("UPDATE blobs SET accessed_at = ? WHERE digest = ?", (time.time(), digest))

    def remove_blob(self, digest: str) -> None:
        self._db.execute("DELETE FROM blobs WHERE digest = ?", (digest,))
        self._db.execute("DELETE FROM torrents WHERE digest = ?", (digest,))
        self._db.execute("DELETE FROM origins WHERE digest = ?", (digest,))
        # A tag whose manifest is gone serves nothing; left, tags would never shrink.
        self._db.execute("DELETE FROM tags WHERE digest = ?", (digest,))

    @_tolerant(_nothing)
    def set_origin(self, digest: str, ns: str, repo: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO origins VALUES (?, ?, ?)", (digest, ns, repo))

    @_tolerant(_nothing)
    def origin(self, digest: str) -> tuple[str, str] | None:
        row = self._db.execute(
            "SELECT ns, repo FROM origins WHERE digest = ?", (digest,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    @_tolerant(_nothing)
    def set_torrents(self, digest: str, metainfos: list[bytes]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO torrents VALUES (?, ?, ?)",
            [(digest, index, metainfo) for index, metainfo in enumerate(metainfos)],
        )

    @_tolerant(_nothing)
    def remove_torrents(self, digest: str) -> None:
        self._db.execute("DELETE FROM torrents WHERE digest = ?", (digest,))

    @_tolerant(list)
    def torrents(self, digest: str) -> list[bytes]:
        rows = self._db.execute(
            "SELECT metainfo FROM torrents WHERE digest = ? ORDER BY chunk", (digest,)
        )
        return [bytes(row[0]) for row in rows]

    @_tolerant(list)
    def blobs(self) -> list[BlobRecord]:
        rows = self._db.execute("SELECT digest, size, media_type, accessed_at FROM blobs")
        return [BlobRecord(*row) for row in rows]

    @_tolerant(int)
    def total_bytes(self) -> int:
        return int(self._db.execute("SELECT coalesce(sum(size), 0) FROM blobs").fetchone()[0])

    @_tolerant(lambda: iter(()))
    def least_recently_used(self) -> Iterator[BlobRecord]:
        """Unpinned blobs, oldest access first."""
        rows = self._db.execute(
            "SELECT digest, size, media_type, accessed_at FROM blobs "
            "WHERE digest NOT IN (SELECT digest FROM pins) ORDER BY accessed_at"
        ).fetchall()
        return (BlobRecord(*row) for row in rows)

    @_tolerant(_nothing)
    def set_tag(self, ns: str, repo: str, tag: str, digest: str, media_type: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO tags VALUES (?, ?, ?, ?, ?, ?)",
            (ns, repo, tag, digest, media_type, time.time()),
        )

    @_tolerant(_nothing)
    def tag(self, ns: str, repo: str, tag: str) -> TagRecord | None:
        row = self._db.execute(
            "SELECT digest, media_type, fetched_at FROM tags WHERE ns = ? AND repo = ? AND tag = ?",
            (ns, repo, tag),
        ).fetchone()
        return TagRecord(*row) if row else None

    def pin(self, digest: str, owner: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO pins VALUES (?, ?)", (digest, owner))

    @_tolerant(_nothing)
    def unpin(self, owner: str) -> None:
        self._db.execute("DELETE FROM pins WHERE owner = ?", (owner,))

    @_tolerant(set)
    def pin_owners(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT DISTINCT owner FROM pins")}

    @_tolerant(set)
    def owners(self, digest: str) -> set[str]:
        rows = self._db.execute("SELECT owner FROM pins WHERE digest = ?", (digest,))
        return {row[0] for row in rows}

    @_tolerant(int)
    def pinned_bytes(self) -> int:
        row = self._db.execute(
            "SELECT coalesce(sum(size), 0) FROM blobs WHERE digest IN (SELECT digest FROM pins)"
        ).fetchone()
        return int(row[0])

    @_tolerant(bool)
    def pinned(self, digest: str) -> bool:
        row = self._db.execute("SELECT 1 FROM pins WHERE digest = ? LIMIT 1", (digest,))
        return row.fetchone() is not None
