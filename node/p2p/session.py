"""The node's libtorrent session: one per node, on `--peer-listen`, nothing but our peers.

Settings are the measured ones of reference/libtorrent.md: no DHT, LSD, UPnP or NAT-PMP (they
contact outside hosts), TCP only, fixed unchoke slots, no auto-management, many connections.
libtorrent reports through alerts; one thread waits for them, copies what matters out of each
(alert objects die at the next pop) and hands the events to the event loop, which owns all the
state here. Nothing on the event loop waits on libtorrent's own thread: a torrent's progress
comes with the once-a-second state updates, and an alert's torrent is found by its handle in a
table rather than by asking the torrent (each such question is a round trip to libtorrent's
network thread, and the answer a wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import libtorrent as lt

from distributed_images import listener
from node.p2p.metainfo import ChunkTorrent

log = logging.getLogger(__name__)

PeerAddress = tuple[str, int]
STATS_INTERVAL = 1.0
PEER_CONNECTIONS = 4000  # open at once, fewer when the open-file limit is low
MIN_PEER_CONNECTIONS = 64
READY_TIMEOUT = 1.0  # seconds to wait for a new torrent to accept peers before going on
MAX_RESTARTS = 3  # of a complete torrent that stopped on an error
FILE_TOO_SHORT = 23  # libtorrent's own error code: a file ends before the torrent's pieces do
MAX_LISTED_TORRENTS = 500  # asked for their peers when someone looks (the status page)
RESTART_DELAY = 0.5


class TorrentFailed(Exception):
    """A chunk torrent hit a storage error or was removed before it finished. `os_error`: the
    system's error behind a storage error (a full disk says ENOSPC there); `damaged`: the file
    ends before the chunk does, or the disk cannot read it (EIO), which no restart mends."""

    def __init__(
        self, message: str, os_error: OSError | None = None, damaged: bool = False
    ) -> None:
        super().__init__(message)
        self.os_error = os_error
        self.damaged = damaged


def _settings(host: str, port: int, upload_limit: int, download_limit: int) -> dict[str, object]:
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return {
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "dht_bootstrap_nodes": "",
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "listen_interfaces": listen,
        "outgoing_interfaces": "" if host in ("0.0.0.0", "::") else host,
        "allow_multiple_connections_per_ip": True,
        "unchoke_slots_limit": -1,
        "choking_algorithm": 0,
        "active_downloads": -1,
        "active_seeds": -1,
        "active_limit": -1,
        # Its peers take the half of the open-file limit the registry port leaves them.
        "connections_limit": max(MIN_PEER_CONNECTIONS, listener.file_bound(PEER_CONNECTIONS)),
        # A peer that refused us had not added the chunk yet (it may a moment later): retry it
        # within a second, not after the default 60.
        "min_reconnect_time": 1,
        # Plain BitTorrent handshakes: by default each connection (one per chunk torrent and
        # peer) opens with a Diffie-Hellman exchange and an RC4-obfuscated handshake, only to
        # send the payload in the clear anyway; the bytes are checked by their hashes.
        "out_enc_policy": int(lt.enc_policy.pe_disabled),
        "in_enc_policy": int(lt.enc_policy.pe_disabled),
        "send_buffer_watermark": 3 << 20,
        "send_buffer_low_watermark": 1 << 20,
        "send_buffer_watermark_factor": 150,
        # Two disk threads, not ten: fewer threads to wake per piece when many nodes share CPUs
        # (p2p-cold 1.26 LB against 1.29, side by side in three runs).
        "aio_threads": 2,
        "upload_rate_limit": upload_limit,
        "download_rate_limit": download_limit,
        "alert_mask": lt.alert_category.error
        | lt.alert_category.status
        | lt.alert_category.storage,
        "user_agent": "distributed-images",
    }


@dataclass
class _Starting:
    """A torrent being added. libtorrent checks its files while it is paused; resumed only then,
    it connects to the peers it was given at once (its "connect boost"), where resumed while
    still checking it would wait for the session's once-a-second round of connections. A file
    left by an earlier attempt needs a full check, which libtorrent starts only once resumed.
    The torrent accepts peers once checked and resumed; a peer that connects before is turned
    away and tries again only a second later."""

    checked: bool = False
    resumed: bool = False
    resumable: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    ready: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def saw(self, kind: str) -> None:
        self.checked = self.checked or kind == "checked"
        self.resumed = self.resumed or kind == "resumed"
        if (self.checked or kind == "checking") and not self.resumable.done():
            self.resumable.set_result(None)
        if self.checked and self.resumed and not self.ready.done():
            self.ready.set_result(None)


@dataclass
class _Torrent:
    handle: lt.torrent_handle
    seeding: bool
    save_path: Path
    size: int
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    hash_failures: int = 0
    finished: bool = False
    restarts: int = 0  # after errors, once it was complete
    restart: asyncio.TimerHandle | None = None  # one is due
    unreadable: bool = False  # its file lost bytes or fails reads: said once


@dataclass(frozen=True)
class PeerStats:
    """What moved over the swarm since the last report (once a second)."""

    sent: int  # payload bytes uploaded
    received: int  # payload bytes downloaded, `redundant` included
    redundant: int  # of those, bytes this node already had or that failed their piece hash
    peers: int  # connections open now


@dataclass(frozen=True)
class ConnectedPeer:
    """A peer this node has connections open to, over all its chunk torrents."""

    address: str  # host:port of the remote end
    downloaded: int  # payload bytes received over those connections
    uploaded: int
    torrents: int  # connections: one per torrent


class PeerSession:
    def __init__(
        self,
        host: str,
        port: int,
        upload_limit: int = 0,
        download_limit: int = 0,
        on_stats: Callable[[PeerStats], None] | None = None,
        on_corrupt: Callable[[str], None] | None = None,
        on_unreadable: Callable[[str], None] | None = None,
    ) -> None:
        self._settings = _settings(host, port, upload_limit, download_limit)
        self._on_stats = on_stats
        self._on_corrupt = on_corrupt  # (infohash) a seeded file failed its piece hash
        self._on_unreadable = on_unreadable  # (infohash) a seeded file lost bytes, or fails reads
        self._torrents: dict[str, _Torrent] = {}
        self._starting: dict[str, _Starting] = {}
        self._abandoned: dict[str, asyncio.Future[None]] = {}  # adds cancelled midway
        # Written by the thread that adds a torrent, read by the alert thread: hash(handle) is
        # the torrent's identity within the session.
        self._infohashes: dict[int, str] = {}
        self._progress: dict[str, int] = {}  # bytes done, as the latest state update said
        self._session: lt.session | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._payload = (0, 0, 0)  # sent, received, redundant: libtorrent's running totals

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Settings in the constructor, so nothing starts before they apply.
        self._session = lt.session(self._settings)  # type: ignore[call-overload]
        if self._settings["upload_rate_limit"] or self._settings["download_rate_limit"]:
            # Rate limits apply to the global peer class only, and libtorrent puts private and
            # loopback addresses (every cluster peer) in the unlimited local class: not here.
            self._session.set_peer_class_filter(_everyone_global())
        self._thread = threading.Thread(
            target=self._pump_alerts, name="libtorrent-alerts", daemon=True
        )
        self._thread.start()

    async def close(self) -> None:
        self._stopping.set()
        if self._thread:
            await asyncio.to_thread(self._thread.join)
        for torrent in self._torrents.values():
            if not torrent.done.done():
                torrent.done.set_exception(TorrentFailed("session closed"))
                torrent.done.exception()  # retrieved: nobody may be waiting any more
        self._torrents.clear()
        self._session = None

    @property
    def port(self) -> int:
        assert self._session is not None
        return int(self._session.listen_port())

    async def connected_peers(self) -> list[ConnectedPeer]:
        """The peers connected now (over at most MAX_LISTED_TORRENTS torrents), most bytes first.
        libtorrent is asked for each torrent's peer list, in a thread."""
        handles = [t.handle for t in list(self._torrents.values())[:MAX_LISTED_TORRENTS]]
        return await asyncio.to_thread(_connected, handles)

    def has(self, infohash: str) -> bool:
        return infohash in self._torrents

    async def add(
        self,
        torrent: ChunkTorrent,
        save_path: Path,
        *,
        seed: bool,
        hashed: bool = False,
        peers: Iterable[PeerAddress] = (),
    ) -> None:
        """Add a chunk torrent: seeding a file already in place, or downloading into
        `save_path`. A seed is checked lazily (seed mode: a piece is hashed when first asked
        for, and a bad one is never sent), unless `hashed`: its metainfo was just made from the
        file, so it is seeded as it is. Added paused, given its peers, and resumed once checked,
        so connections start at once (see `_Starting`); returns once the torrent accepts peers,
        so a seed published next turns none of them away. A download takes the rarest pieces
        first (libtorrent's default): a pull hands a chunk on only once it is whole, so no order
        within it streams sooner, and requesters that hold different pieces trade them."""
        assert self._session is not None
        if (abandoned := self._abandoned.get(torrent.infohash)) is not None:
            await asyncio.shield(abandoned)  # out of the session first: it would be handed back
        if torrent.infohash in self._torrents:
            self.connect(torrent.infohash, peers)
            return
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(torrent.metainfo)
        params.save_path = str(save_path)
        flags = lt.torrent_flags.paused
        if seed and hashed:
            params.have_pieces = [True] * params.ti.num_pieces()
        elif seed:
            flags |= lt.torrent_flags.seed_mode
        params.flags = flags
        starting = self._starting[torrent.infohash] = _Starting()
        adding = asyncio.ensure_future(
            asyncio.to_thread(self._start, torrent.infohash, params, list(peers))
        )
        try:
            try:
                handle = await asyncio.shield(adding)
            except asyncio.CancelledError:
                self._abandon(torrent.infohash, adding)
                raise
            size = params.ti.total_size() if params.ti is not None else 0
            self._torrents[torrent.infohash] = _Torrent(handle, seed, save_path, size)
            if seed:
                self._torrents[torrent.infohash].done.set_result(None)
            try:
                async with asyncio.timeout(READY_TIMEOUT):
                    await asyncio.shield(starting.resumable)
                    self._resume(torrent.infohash)
                    await asyncio.shield(starting.ready)
            except TimeoutError:
                log.debug("chunk torrent slow to start", extra={"infohash": torrent.infohash})
                self._resume(torrent.infohash)
        finally:
            self._starting.pop(torrent.infohash, None)

    def _abandon(self, infohash: str, adding: asyncio.Future[lt.torrent_handle]) -> None:
        """Take out of the session the torrent an `add` cancelled midway is putting in, once it
        is in: the worker thread adds it all the same, and the torrent would be left there
        unknown to us, a paused download that a later `add` of the chunk (its seed, once
        fetched) would be handed back by libtorrent instead of adding its own."""

        async def taken_out() -> None:
            with contextlib.suppress(Exception):
                handle = await adding
                self._infohashes.pop(hash(handle), None)
                if self._session is not None:
                    self._session.remove_torrent(handle)

        def done(task: asyncio.Future[None]) -> None:
            if self._abandoned.get(infohash) is task:
                del self._abandoned[infohash]

        self._abandoned[infohash] = asyncio.ensure_future(taken_out())
        self._abandoned[infohash].add_done_callback(done)

    def _resume(self, infohash: str) -> None:
        """Resume a torrent being added, unless it was removed meanwhile (its handle is dead)."""
        torrent = self._torrents.get(infohash)
        if torrent is not None:
            torrent.handle.resume()

    def _start(
        self, infohash: str, params: lt.add_torrent_params, peers: list[PeerAddress]
    ) -> lt.torrent_handle:
        """Add paused and give it its peers (on a worker thread: the event loop may be busy)."""
        assert self._session is not None
        handle = self._session.add_torrent(params)
        self._infohashes[hash(handle)] = infohash
        for peer in peers:
            handle.connect_peer(peer)
        return handle

    def connect(self, infohash: str, peers: Iterable[PeerAddress]) -> None:
        torrent = self._torrents.get(infohash)
        if torrent is None:
            return
        for peer in peers:
            torrent.handle.connect_peer(peer)

    async def finished(self, infohash: str) -> None:
        """Wait until the torrent is complete and its data is on disk."""
        await asyncio.shield(self._torrents[infohash].done)

    def progress(self, infohash: str) -> int:
        """Bytes of the torrent downloaded and verified, as of the last state update (at most
        STATS_INTERVAL old)."""
        return self._progress.get(infohash, 0) if infohash in self._torrents else 0

    def hash_failures(self, infohash: str) -> int:
        """Pieces of the torrent that failed their hash so far."""
        torrent = self._torrents.get(infohash)
        return 0 if torrent is None else torrent.hash_failures

    def move(self, infohash: str, save_path: Path) -> None:
        """Seed the torrent, complete, from `save_path` from now on. Nothing moves when the old
        directory leads there (the store leaves a link when it publishes a blob): libtorrent
        turns the torrent's peers away until a storage move is done. A seed in seed mode stays
        in it: leaving it would drop its peers and hash the whole chunk again."""
        torrent = self._torrents.get(infohash)
        if torrent is None:
            return
        torrent.seeding = True
        if not _same_directory(torrent.save_path, save_path):
            torrent.handle.move_storage(str(save_path), lt.move_flags_t.reset_save_path)
            torrent.save_path = save_path

    def remove(self, infohash: str) -> None:
        torrent = self._torrents.pop(infohash, None)
        self._progress.pop(infohash, None)
        if torrent is None or self._session is None:
            return
        self._infohashes.pop(hash(torrent.handle), None)
        self._session.remove_torrent(torrent.handle)
        if not torrent.done.done():
            torrent.done.set_exception(TorrentFailed("removed"))
            torrent.done.exception()

    def seeding(self) -> int:
        return sum(1 for t in self._torrents.values() if t.seeding)

    # -- alerts, on the alert thread

    def _pump_alerts(self) -> None:
        assert self._session is not None and self._loop is not None
        next_stats = time.monotonic()
        while not self._stopping.is_set():
            if time.monotonic() >= next_stats:
                self._session.post_session_stats()
                self._session.post_torrent_updates()
                next_stats = time.monotonic() + STATS_INTERVAL
            if self._session.wait_for_alert(250) is None:
                continue
            events = [event for a in self._session.pop_alerts() if (event := self._event(a))]
            if events:
                self._loop.call_soon_threadsafe(self._dispatch, events)

    def _event(self, alert: lt.alert) -> tuple[str, str, object] | None:
        """What the event loop needs of an alert, copied out of it (alerts die at the next
        pop)."""
        if isinstance(alert, lt.session_stats_alert):
            values = alert.values
            totals = (
                values["net.sent_payload_bytes"],
                values["net.recv_payload_bytes"],
                values["net.recv_redundant_bytes"] + values["net.recv_failed_bytes"],
            )
            return "stats", "", (totals, values["peer.num_peers_connected"])
        if isinstance(alert, lt.state_update_alert):
            done = [(self._infohash(s.handle), int(s.total_wanted_done)) for s in alert.status]
            return "progress", "", done
        if isinstance(alert, lt.state_changed_alert):
            if alert.state == lt.torrent_status.states.checking_files:
                return "checking", self._infohash(alert.handle), None
            return None
        if isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)):
            return "error", self._infohash(alert.handle), _failure(alert)
        for kind, name in _TORRENT_EVENTS:
            if isinstance(alert, kind):
                return name, self._infohash(alert.handle), alert.message()
        if isinstance(alert, lt.listen_failed_alert):
            log.error("peer listener failed", extra={"detail": alert.message()})
        return None

    def _infohash(self, handle: lt.torrent_handle) -> str:
        """The torrent's infohash, from the table; asked of libtorrent only for a torrent whose
        alert came before `_start` could note it."""
        known = self._infohashes.get(hash(handle))
        return known if known is not None else str(handle.info_hashes().v1)

    # -- events, on the event loop

    def _dispatch(self, events: list[tuple[str, str, object]]) -> None:
        for kind, infohash, value in events:
            if kind == "stats":
                self._stats(value)  # type: ignore[arg-type]
                continue
            if kind == "progress":
                for updated, done in value:  # type: ignore[attr-defined]
                    if updated in self._torrents:
                        self._progress[updated] = done
                continue
            if kind in ("checking", "checked", "resumed"):
                starting = self._starting.get(infohash)
                if starting is not None:
                    starting.saw(kind)
                continue
            torrent = self._torrents.get(infohash)
            if torrent is None:
                continue
            if kind == "finished" and not torrent.seeding:
                # Finished can come before the data is on disk: flush, then call it complete.
                torrent.finished = True
                torrent.handle.flush_cache()
            elif kind == "flushed" and torrent.finished and not torrent.done.done():
                self._progress[infohash] = torrent.size
                torrent.done.set_result(None)
            elif kind == "error":
                assert isinstance(value, TorrentFailed)
                if value.damaged and _succeeded(torrent.done) and self._on_unreadable:
                    # A seed whose file lost bytes or sits on a bad sector: no restart brings
                    # them back. Said once; the swarm stops offering the chunk.
                    if not torrent.unreadable:
                        torrent.unreadable = True
                        extra = {"infohash": infohash, "error": str(value)}
                        log.warning("seeded chunk unreadable", extra=extra)
                        self._on_unreadable(infohash)
                    continue
                failing = not torrent.done.done()
                restart = (
                    _succeeded(torrent.done)  # a download that failed is its pull's to handle
                    and torrent.restart is None
                    and torrent.restarts < MAX_RESTARTS
                )
                if not (failing or restart):
                    continue  # one error brings an alert for each block it failed: said once
                extra = {"infohash": infohash, "error": str(value)}
                log.warning("chunk torrent failed", extra=extra)
                if failing:
                    torrent.done.set_exception(value)
                else:
                    # A seed whose file was out of reach a moment (its blob's directory being
                    # renamed into place as a peer asked for a piece) would stay stopped. One
                    # error brings a file alert and a torrent alert: one restart for both.
                    torrent.restarts += 1
                    torrent.restart = asyncio.get_running_loop().call_later(
                        RESTART_DELAY, self._restart, infohash, torrent
                    )
            elif kind == "hash_failed":
                log.warning(
                    "piece failed its hash",
                    extra={"infohash": infohash, "seeding": torrent.seeding, "detail": value},
                )
                torrent.hash_failures += 1
                if torrent.seeding and self._on_corrupt is not None:
                    self._on_corrupt(infohash)

    def _restart(self, infohash: str, torrent: _Torrent) -> None:
        torrent.restart = None
        if self._torrents.get(infohash) is torrent:
            log.info("restarting chunk torrent", extra={"infohash": infohash})
            torrent.handle.clear_error()
            torrent.handle.force_recheck()  # it no longer counts the pieces it missed as had
            torrent.handle.resume()

    def _stats(self, values: tuple[tuple[int, int, int], int]) -> None:
        totals, peers = values
        sent, received, redundant = (
            max(0, now - before) for now, before in zip(totals, self._payload, strict=True)
        )
        self._payload = totals
        if self._on_stats:
            self._on_stats(PeerStats(sent, received, redundant, peers))


def _same_directory(a: Path, b: Path) -> bool:
    try:
        return a.resolve(strict=True) == b.resolve(strict=True)
    except OSError:
        return False


def _everyone_global() -> lt.ip_filter:
    every = lt.ip_filter()
    flag = 1 << lt.session.global_peer_class_id
    every.add_rule("0.0.0.0", "255.255.255.255", flag)
    every.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", flag)
    return every


def _succeeded(done: asyncio.Future[None]) -> bool:
    return done.done() and not done.cancelled() and done.exception() is None


def _failure(alert: lt.torrent_error_alert | lt.file_error_alert) -> TorrentFailed:
    """The torrent's failure, with the system's error behind it when there is one."""
    code = alert.error
    system = code.category().name() in ("system", "generic") and code.value() != 0
    os_error = OSError(code.value(), code.message()) if system else None
    short = code.category().name() == "libtorrent" and code.value() == FILE_TOO_SHORT
    damaged = short or (os_error is not None and os_error.errno == errno.EIO)
    return TorrentFailed(alert.message(), os_error, damaged)


_TORRENT_EVENTS: tuple[tuple[type[lt.torrent_alert], str], ...] = (
    (lt.torrent_finished_alert, "finished"),
    (lt.cache_flushed_alert, "flushed"),
    (lt.hash_failed_alert, "hash_failed"),
    (lt.torrent_checked_alert, "checked"),
    (lt.torrent_resumed_alert, "resumed"),
)


def _connected(handles: list[lt.torrent_handle]) -> list[ConnectedPeer]:
    totals: dict[str, tuple[int, int, int]] = {}
    for handle in handles:
        try:
            infos = handle.get_peer_info() if handle.is_valid() else []
        except RuntimeError:  # removed meanwhile
            continue
        for peer in infos:
            address = f"{peer.ip[0]}:{peer.ip[1]}"
            down, up, count = totals.get(address, (0, 0, 0))
            totals[address] = (down + peer.total_download, up + peer.total_upload, count + 1)
    peers = [ConnectedPeer(a, down, up, n) for a, (down, up, n) in totals.items()]
    return sorted(peers, key=lambda p: (-(p.downloaded + p.uploaded), p.address))
