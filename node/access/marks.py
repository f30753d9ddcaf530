"""Repositories known to need credentials, kept across restarts in the data dir.

What makes a node serve a repository's cached content while its upstream cannot be asked: a
repository last seen public stays public, one last seen private stays closed. This file is how a
restarted node still knows the private ones (repository names only, never a credential). A
repository the node never saw private is treated as public during an outage: it holds nothing of
a private repository it never saw, since it asks before it serves (node.access).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from distributed_images.recent import Recent

log = logging.getLogger(__name__)

MAX_MARKS = 10_000
FILE_NAME = "private-repositories.json"


class PrivateMarks:
    def __init__(self, path: Path | None, limit: int = MAX_MARKS) -> None:
        self._path = path
        self._marks: Recent[str, None] = Recent(limit)
        for name in self._load():
            self._marks.remember(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._marks

    def mark(self, name: str) -> None:
        if name not in self._marks:
            self._marks.remember(name, None)
            self._save()

    def unmark(self, name: str) -> None:
        if name in self._marks:
            self._marks.pop(name)
            self._save()

    def _load(self) -> list[str]:
        if self._path is None:
            return []
        try:
            names = json.loads(self._path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            log.warning(
                "ignoring unreadable marks", extra={"path": str(self._path), "error": str(e)}
            )
            return []
        return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []

    def _save(self) -> None:
        if self._path is None:
            return
        temporary = self._path.with_suffix(".tmp")
        try:
            with open(temporary, "w") as f:
                json.dump(list(self._marks.keys()), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self._path)
        except OSError as e:
            log.warning("cannot save marks", extra={"path": str(self._path), "error": str(e)})
