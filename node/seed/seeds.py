"""The images directory, seeded: its archives imported into the store and their tags answered.

One owner task (`run`) scans the directory every `seed_scan_interval` seconds. A new or changed
archive is imported once it has settled (unchanged for one scan, or not modified for a few
seconds), in a task of its own, so a long import never delays the next one; while a changed
archive is imported, its previous content goes on being served. A removed archive is unpinned
and its tags dropped. A broken one is logged once and skipped until it changes; one the store
had no room for (its quota, its disk full or read-only) is imported again once the store says
there is room, its tries spaced out from RETRY_SPACING to MAX_RETRY_SPACING. Tags become
visible only once everything an archive holds is in the store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol, runtime_checkable

from distributed_images.logs import printable
from distributed_images.startup import ownership
from node.errors import NodeError
from node.seed.catalog import Catalog, Seeded
from node.seed.config import SeedConfig
from node.seed.errors import ArchiveInvalid, ArchiveTooLarge, ArchiveUnsupported
from node.seed.importer import ArchiveImport, Imported
from node.seed.refs import ImageRef
from node.seed.watcher import Found, look, scan
from node.store.contentstore import ContentStore, unwritable

log = logging.getLogger("node.seed")

OWNER_PREFIX = "seed:"
REWRITE = (
    "write it again completely (`docker save`, or `skopeo copy` to docker-archive: or "
    "oci-archive:), or remove it"
)
CHANGED_WHILE_IMPORTED = "archive changed while imported: it is imported again"
RETRY_SPACING = 5.0
MAX_RETRY_SPACING = 300.0


@dataclass(frozen=True)
class Skipped:
    """An archive that is not seeded: why, and what would make it seedable."""

    name: str  # its path relative to the images directory
    reason: str
    fix: str


@dataclass(frozen=True)
class _Failure:
    found: Found  # the archive as it was when it failed
    skipped: Skipped
    room: int | None  # bytes the store had no room for, to try again once it has; None: never
    tries: int
    at: float  # time.monotonic() of the last try

    def due(self, now: float) -> bool:
        spacing = min(MAX_RETRY_SPACING, RETRY_SPACING * 2 ** (self.tries - 1))
        return self.room is not None and now - self.at >= spacing


@runtime_checkable
class ListsPinOwners(Protocol):
    """A store that can list its pin owners, so pins of archives removed while the node was
    down are released at start."""

    def pin_owners(self) -> set[str]: ...


class Seeds:
    def __init__(
        self,
        images_dir: Path,
        store: ContentStore,
        config: SeedConfig,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._dir = images_dir
        self._store = store
        self._config = config
        self.on_change = on_change
        self._catalog = Catalog()
        self._failed: dict[str, _Failure] = {}
        self._previous: dict[str, Found] = {}
        self._importing: dict[str, asyncio.Task[None]] = {}
        self._stale: set[str] = set()  # seeded archives whose content was damaged: import again
        self._workers: asyncio.Semaphore | None = None
        # The archives found at start, until each is seeded, skipped or gone: one still being
        # written is waited for until it is complete.
        self._awaited: set[str] | None = None
        self.ready = asyncio.Event()  # set once the archives found at start are dealt with

    @property
    def images_dir(self) -> Path:
        return self._dir

    @property
    def seed_first(self) -> bool:
        return self._config.seed_first

    # -- what the node asks

    def lookup(self, ns: str, repo: str, tag: str) -> str | None:
        """The manifest digest of a seeded tag (ns and repo as `Registries.resolve` and
        `Upstream.repository` give them), or None."""
        return self._catalog.lookup(ImageRef(ns.lower(), repo, tag))

    def tags_of(self, ns: str, repo: str) -> list[str]:
        """The seeded tags of one repository (named as `lookup` takes it)."""
        ns = ns.lower()
        return sorted(ref.tag for ref in self._catalog.tags() if (ref.ns, ref.repo) == (ns, repo))

    def repositories(self, ns: str) -> list[str]:
        """The repositories of a registry that hold seeded tags."""
        ns = ns.lower()
        return sorted({ref.repo for ref in self._catalog.tags() if ref.ns == ns})

    def refs(self) -> list[tuple[str, str]]:
        """(normalized reference, manifest digest) of every seeded tag, to announce."""
        return sorted((str(ref), digest) for ref, digest in self._catalog.tags().items())

    def archives(self) -> list[Seeded]:
        return self._catalog.archives()

    def reimport(self, digest: str) -> bool:
        """A blob of the store was found damaged and purged: import the archives holding it
        again (at the next scan; their tags stay served meanwhile). Whether there are any."""
        holders = {s.name for s in self._catalog.archives() if digest in s.digests}
        self._stale |= holders
        return bool(holders)

    def failures(self) -> dict[str, str]:
        """Archives skipped as broken, with the reason."""
        return {name: failure.skipped.reason for name, failure in self._failed.items()}

    def skipped(self) -> list[Skipped]:
        """Archives skipped, with the reason and the fix, by name."""
        return [self._failed[name].skipped for name in sorted(self._failed)]

    def waiting_for(self) -> int:
        """Archives found at start and not yet dealt with (0 once `ready` is set)."""
        return 0 if self.ready.is_set() else len(self._awaited or self._previous)

    # -- the owner task

    async def run(self) -> None:
        log.info(
            "seeding the images directory",
            extra={"images_dir": str(self._dir), "precedence": self._config.seed_precedence},
        )
        try:
            await self._round()
            self._awaited = set(self._previous)
            self._check_initial()
            while True:
                await asyncio.sleep(self._config.seed_scan_interval)
                try:
                    await self._round()
                except Exception:  # one bad round must not end seeding
                    log.exception("scanning the images directory failed")
                self._check_initial()
        finally:
            tasks = list(self._importing.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def sync(self) -> None:
        """One scan, then wait for the imports it started (and any already running)."""
        await self._round()
        await asyncio.gather(*self._importing.values())

    def _check_initial(self) -> None:
        """Once every archive found at start is seeded, skipped or gone: release the pins of
        archives that left while the node was down, and call the directory seeded."""
        if self._awaited is None or self.ready.is_set():
            return
        self._awaited = {
            name
            for name in self._awaited
            if name in self._previous
            and (name in self._importing or not (self._catalog.get(name) or name in self._failed))
        }
        if self._awaited:
            return
        self._release_stale_pins()
        self.ready.set()
        log.info(
            "images directory seeded",
            extra={"archives": len(self._catalog.archives()), "tags": len(self._catalog.tags())},
        )

    async def _round(self) -> None:
        found = await asyncio.to_thread(scan, self._dir)
        gone = {s.name for s in self._catalog.archives()} | set(self._failed)
        for name in sorted(gone - set(found)):
            if name not in self._importing:
                self._forget(name)
        for archive in found.values():
            if not _utf8(archive.name):
                self._refuse_name(archive)
                continue
            if archive.name not in self._importing and self._due(archive):
                task = asyncio.create_task(self._import(archive), name=f"seed {archive.name}")
                self._importing[archive.name] = task
                task.add_done_callback(partial(self._imported, archive.name))
        self._previous = found

    def _imported(self, name: str, task: asyncio.Task[None]) -> None:
        self._importing.pop(name, None)
        self._check_initial()

    def _due(self, archive: Found) -> bool:
        current = self._catalog.get(archive.name)
        if current is not None and current.owner == archive.owner:
            return archive.name in self._stale
        failed = self._failed.get(archive.name)
        if failed is not None and failed.found.owner == archive.owner:
            return self._room_again(failed)
        previous = self._previous.get(archive.name)
        return archive.settled() or (previous is not None and previous.owner == archive.owner)

    def _refuse_name(self, archive: Found) -> None:
        """An archive whose name is not UTF-8 (copied from a host with another locale) is never
        imported: the store records names as UTF-8 only. Skipped once, named printably."""
        failed = self._failed.get(archive.name)
        if failed is None or failed.found.owner != archive.owner:
            fix = "rename it (its name in UTF-8, as the other archives' are)"
            self._failed_now(archive, "its name is not UTF-8", fix, None)

    def _room_again(self, failed: _Failure) -> bool:
        """Whether an archive the store had no room for may be tried again: not too soon, and
        only once the store says it has the room (evicting unused content if that makes it)."""
        if not failed.due(time.monotonic()):
            return False
        assert failed.room is not None
        return self._store.no_room_to_pin(failed.room) is None

    # -- one archive

    async def _import(self, archive: Found) -> None:
        if self._workers is None:
            self._workers = asyncio.Semaphore(max(1, self._config.seed_workers))
        self._stale.discard(archive.name)
        log.info("importing archive", extra={"archive": archive.name})
        job = ArchiveImport(archive.path, archive.name, archive.owner, self._store, self._workers)
        try:
            imported = await job.run()
        except ArchiveTooLarge as e:
            room = max(e.room, _size(archive.path)) if e.room else None
            self._skip(archive, e.message, e.detail, e.fix, room)
            return
        except ArchiveInvalid as e:
            fix = "" if isinstance(e, ArchiveUnsupported) else REWRITE
            self._skip(archive, e.message, e.detail, fix)
            return
        except PermissionError as e:
            self._skip(archive, *self._unreadable(archive, e))
            return
        except (NodeError, OSError) as e:
            if unwritable(e):  # the disk, not the archive: full, or read-only for now
                fix = "free disk space under --data-dir (or mend the disk): it is imported again"
                self._skip(archive, str(e), None, fix, _size(archive.path))
            else:
                self._skip(archive, str(e), None)
            return
        except Exception as e:  # a bug must not stop the node: the archive is skipped
            log.exception("importing archive failed", extra={"archive": archive.name})
            self._skip(archive, repr(e), None)
            return
        if look(self._dir, archive.path) != archive:
            self._store.unpin(archive.owner)
            log.info(CHANGED_WHILE_IMPORTED, extra={"archive": archive.name})
            return
        self._seeded(archive, imported)

    def _seeded(self, archive: Found, imported: Imported) -> None:
        plan = imported.plan
        seeded = Seeded(
            archive.name,
            archive.owner,
            plan.format,
            tuple(plan.tags),
            tuple(plan.images),
            plan.digests(),
        )
        previous = self._catalog.put(seeded)
        if previous is not None and previous.owner != seeded.owner:
            self._store.unpin(previous.owner)
        self._failed.pop(archive.name, None)
        log.info(
            "seeded archive",
            extra={
                "archive": archive.name,
                "format": plan.format,
                "images": len(plan.images),
                "tags": ",".join(str(ref) for ref, _ in plan.tags) or "-",
                "blobs": len(plan.blobs),
                "copied_bytes": imported.copied_bytes,
                "already_stored": imported.present_blobs,
                "seconds": round(imported.seconds, 2),
            },
        )
        self._changed()

    def _unreadable(self, archive: Found, error: PermissionError) -> tuple[str, None, str]:
        """Why a file of the archive cannot be read (a `docker save -o` archive is mode 0600,
        owned by whoever saved it), and the command that makes it readable."""
        failed = Path(error.filename or archive.path)
        uid = os.getuid()
        reason = (
            f"cannot read {failed}: permission denied ({ownership(failed)}; "
            f"this node runs as uid {uid})"
        )
        recursive = "-R a+rX" if archive.path.is_dir() else "a+r"
        fix = (
            f"make it readable by uid {uid}: `chmod {recursive} {archive.path}` (on the host: "
            f"the same archive in the directory mounted at {self._dir}), or `chown {uid}` it"
        )
        return reason, None, fix

    def _skip(
        self, archive: Found, reason: str, detail: object, fix: str = "", room: int | None = None
    ) -> None:
        self._store.unpin(archive.owner)
        if look(self._dir, archive.path) != archive:
            log.info(CHANGED_WHILE_IMPORTED, extra={"archive": archive.name})
            return
        if detail:
            reason = f"{reason} ({_flat(detail)})"
        self._failed_now(archive, reason, fix, room)
        # The archive as it was before is gone: its content no longer seeds anything.
        previous = self._catalog.remove(archive.name)
        if previous is not None:
            self._store.unpin(previous.owner)
            self._changed()

    def _failed_now(self, archive: Found, reason: str, fix: str, room: int | None) -> None:
        """Log the archive skipped and remember why, counting its tries as it is."""
        log.error("archive skipped", extra={"archive": archive.name, "reason": reason, "fix": fix})
        before = self._failed.get(archive.name)
        tries = before.tries + 1 if before and before.found.owner == archive.owner else 1
        skipped = Skipped(printable(archive.name), reason, fix)
        self._failed[archive.name] = _Failure(archive, skipped, room, tries, time.monotonic())

    def _forget(self, name: str) -> None:
        self._failed.pop(name, None)
        self._stale.discard(name)
        seeded = self._catalog.remove(name)
        if seeded is None:
            return
        self._store.unpin(seeded.owner)
        log.info(
            "archive removed: its blobs are no longer pinned",
            extra={"archive": name, "tags": len(seeded.tags)},
        )
        self._changed()

    def _release_stale_pins(self) -> None:
        if not isinstance(self._store, ListsPinOwners):
            return
        # Archives present now, imported or still importing, keep their pins.
        live = {s.owner for s in self._catalog.archives()}
        live |= {archive.owner for archive in self._previous.values()}
        for owner in sorted(self._store.pin_owners()):
            if owner.startswith(OWNER_PREFIX) and owner not in live:
                self._store.unpin(owner)
                log.info("released the pins of an archive that is gone", extra={"owner": owner})

    def _changed(self) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change()
        except Exception:
            log.exception("seed change callback failed")


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _size(path: Path) -> int:
    """The bytes of an archive on disk: at least what its blobs take in the store, less only
    when compressed."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def _flat(detail: object) -> str:
    if isinstance(detail, dict):
        return ", ".join(f"{k}: {v}" for k, v in detail.items())
    return str(detail)
