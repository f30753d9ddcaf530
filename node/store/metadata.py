"""The store's metadata in SQLite: blobs with their access times, tags with their fetch times,
and pins. One connection owned by the event loop thread; every statement is small."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    media_type TEXT,
    stored_at REAL NOT NULL,
    accessed_at REAL NOT NULL
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
"""


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


class Metadata:
    def __init__(self, path: Path | None) -> None:
        """`path=None` keeps everything in memory (the in-memory store's twin)."""
        self._db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add_blob(self, digest: str, size: int, media_type: str | None) -> None:
        now = time.time()
        self._db.execute(
            "INSERT INTO blobs VALUES (?, ?, ?, ?, ?) ON CONFLICT(digest) DO UPDATE SET "
            "media_type = coalesce(excluded.media_type, media_type), accessed_at = ?",
            (digest, size, media_type, now, now, now),
        )

    def blob(self, digest: str) -> BlobRecord | None:
        row = self._db.execute(
            "SELECT digest, size, media_type, accessed_at FROM blobs WHERE digest = ?", (digest,)
        ).fetchone()
        return BlobRecord(*row) if row else None

    def touch(self, digest: str) -> None:
        self._db.execute("UPDATE blobs SET accessed_at = ? WHERE digest = ?", (time.time(), digest))

    def remove_blob(self, digest: str) -> None:
        self._db.execute("DELETE FROM blobs WHERE digest = ?", (digest,))
        self._db.execute("DELETE FROM torrents WHERE digest = ?", (digest,))

    def set_torrents(self, digest: str, metainfos: list[bytes]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO torrents VALUES (?, ?, ?)",
            [(digest, index, metainfo) for index, metainfo in enumerate(metainfos)],
        )

    def torrents(self, digest: str) -> list[bytes]:
        rows = self._db.execute(
            "SELECT metainfo FROM torrents WHERE digest = ? ORDER BY chunk", (digest,)
        )
        return [bytes(row[0]) for row in rows]

    def blobs(self) -> list[BlobRecord]:
        rows = self._db.execute("SELECT digest, size, media_type, accessed_at FROM blobs")
        return [BlobRecord(*row) for row in rows]

    def total_bytes(self) -> int:
        return int(self._db.execute("SELECT coalesce(sum(size), 0) FROM blobs").fetchone()[0])

    def least_recently_used(self) -> Iterator[BlobRecord]:
        """Unpinned blobs, oldest access first."""
        rows = self._db.execute(
            "SELECT digest, size, media_type, accessed_at FROM blobs "
            "WHERE digest NOT IN (SELECT digest FROM pins) ORDER BY accessed_at"
        ).fetchall()
        return (BlobRecord(*row) for row in rows)

    def set_tag(self, ns: str, repo: str, tag: str, digest: str, media_type: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO tags VALUES (?, ?, ?, ?, ?, ?)",
            (ns, repo, tag, digest, media_type, time.time()),
        )

    def tag(self, ns: str, repo: str, tag: str) -> TagRecord | None:
        row = self._db.execute(
            "SELECT digest, media_type, fetched_at FROM tags WHERE ns = ? AND repo = ? AND tag = ?",
            (ns, repo, tag),
        ).fetchone()
        return TagRecord(*row) if row else None

    def pin(self, digest: str, owner: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO pins VALUES (?, ?)", (digest, owner))

    def unpin(self, owner: str) -> None:
        self._db.execute("DELETE FROM pins WHERE owner = ?", (owner,))

    def pin_owners(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT DISTINCT owner FROM pins")}

    def pinned(self, digest: str) -> bool:
        row = self._db.execute("SELECT 1 FROM pins WHERE digest = ? LIMIT 1", (digest,))
        return row.fetchone() is not None
