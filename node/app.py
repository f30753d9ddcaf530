"""The node binary's composition root: build every part in order, serve, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import logging
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from distributed_images import listener, startup
from node import allocator
from node.access import Access, SeededContent
from node.activity import Activity
from node.blobs import Blobs
from node.config import Config
from node.downloads import Downloads
from node.manifests import Manifests
from node.membership import Membership
from node.metrics import NodeMetrics
from node.oci.descriptors import Sizes
from node.oci.listing import Listing
from node.oci.routes import RegistryAPI
from node.overview import Overview, Parts
from node.p2p import metainfo
from node.p2p.peermanifests import PeerManifests
from node.p2p.pull import PullConfig
from node.p2p.session import PeerSession, PeerStats
from node.p2p.swarm import Swarm
from node.prefetch import Prefetcher
from node.preheat import Preheater
from node.readiness import Readiness
from node.repair import Repair
from node.scrub import Scrubber
from node.seed import Seeds
from node.shutdown import Shutdown
from node.statuspage import StatusPage
from node.store.contentstore import BlobInfo, ContentStore
from node.upstream.auth import Authenticator, Credentials
from node.upstream.client import UpstreamClient
from node.upstream.registries import Registries
from tracker import address
from tracker.credentials import CredentialError

__all__ = ["HELP", "Config", "Node", "compose", "main", "run"]

HELP = "run a node agent: this host's registry mirror, fed by peers and upstreams"
SHUTDOWN_GRACE = 10.0  # from SIGTERM to exit, whatever the node is busy with

log = logging.getLogger("node")


@dataclass
class Node:
    """The parts of a running node that its servers and tests reach."""

    config: Config
    app: web.Application
    store: ContentStore
    metrics: NodeMetrics
    registries: Registries
    session: PeerSession
    swarm: Swarm
    preheater: Preheater
    repair: Repair
    scrubber: Scrubber
    seeds: Seeds | None = None
    ready: bool = False  # serving, with the membership running
    probes: web.Application | None = None  # /metrics, /healthz, /readyz for --metrics-listen
    membership: Membership | None = None  # once it listens

    def serving(self) -> bool:
        """Ready for clients (GET /readyz): up, and the archives found in the images directory
        at start imported, so every image it holds is served."""
        return self.ready and (self.seeds is None or self.seeds.ready.is_set())

    def readiness(self) -> Readiness:
        """Whether the node serves, why not, and what needs a person's attention either way."""
        problems = tuple(
            f"archive skipped: {s.name}: {s.reason}" + (f"; fix: {s.fix}" if s.fix else "")
            for s in (self.seeds.skipped() if self.seeds else [])
        )
        if not self.ready:
            return Readiness(False, "not serving yet (starting) or any more (stopping)", problems)
        if self.seeds is not None and not self.seeds.ready.is_set():
            left = self.seeds.waiting_for()
            why = f"importing the archives found in {self.config.images_dir} at start: {left} left"
            return Readiness(False, why, problems)
        return Readiness(True, "serving", problems)


def main(config: Config) -> int:
    allocator.tune()
    listener.raise_file_limit()
    try:
        asyncio.run(run(config))
    except CredentialError as e:
        raise startup.StartupError(f"cannot join the cluster: {e}") from None
    return 0


@asynccontextmanager
async def compose(config: Config) -> AsyncIterator[Node]:
    """Build the node's parts in dependency order; close them in reverse."""
    metrics = NodeMetrics()
    swarm: Swarm | None = None
    store = _open_store(config, lambda info: _evicted(metrics, swarm, info.digest))
    if config.images_dir:
        startup.readable_dir(config.images_dir, "images dir", "--images-dir")
    startup.usable_ca_file(config.cluster.tracker_tls_ca, "--tracker-tls-ca")
    metrics.store_bytes.set_function(store.usage)
    store.on_trouble = lambda kind: metrics.store_errors.labels(kind).inc()
    registries = Registries(
        config.upstream.registry,
        config.upstream.default_registry,
        config.upstream.public_registries,
        config.access.requester_only,
    )
    credentials = Credentials.load(Path(config.upstream.auth_file))
    downloads = Downloads(
        store, config.upstream.max_blob_size, parallel=config.upstream.cold_fetches
    )
    sizes = Sizes(config.upstream.max_blob_size)
    seeds = Seeds(config.images_dir, store, config.seed) if config.images_dir else None
    authenticator = Authenticator(credentials)
    upstream = UpstreamClient(
        authenticator,
        metrics,
        timeout=config.upstream.upstream_timeout,
        retries=config.upstream.upstream_retries,
        connections=config.upstream.upstream_connections,
        private_networks=tuple(config.upstream.private_upstream_networks),
    )
    peer_host, peer_port = address.split(config.cluster.peer_listen)
    session = PeerSession(
        peer_host,
        peer_port,
        config.cluster.upload_limit,
        config.cluster.download_limit,
        on_stats=lambda stats: _peer_stats(metrics, stats),
        on_corrupt=lambda infohash: swarm.corrupt(infohash) if swarm else None,
        on_unreadable=lambda infohash: swarm.unreadable(infohash) if swarm else None,
    )
    await session.start()
    try:
        pulls = PullConfig(stall_timeout=config.cluster.stall_timeout)
        swarm = Swarm(store, session, metrics, pulls, refs=seeds.refs if seeds else list)
        if seeds is not None:
            seeds.on_change = lambda: _spawn(swarm.images_changed(), "images changed")
        async with upstream:
            node: Node
            blobs = Blobs(store, downloads, upstream, metrics, sizes, swarm)
            peers = PeerManifests(swarm, blobs, store)
            manifests = Manifests(
                store, upstream, metrics, sizes, seeds, peers, config.seed.seed_first
            )
            prefetcher = Prefetcher(blobs, config.prefetch)
            access = Access(
                upstream,
                authenticator,
                metrics,
                config.access,
                config.store.data_dir,
                SeededContent(store, swarm, seeds),
                store,
            )
            activity = Activity()
            listing = Listing(
                registries,
                upstream,
                seeds.tags_of if seeds else lambda ns, repo: [],
                seeds.repositories if seeds else lambda ns: [],
                access,
            )
            api = RegistryAPI(
                registries,
                manifests,
                blobs,
                metrics,
                lambda: node.readiness(),
                prefetcher,
                listing,
                access,
                activity,
            )
            preheater = Preheater(registries, manifests, blobs, access)
            repair = Repair(
                swarm,
                metrics,
                lambda ns, repo, digest: blobs.fetch(registries.resolve(ns), repo, digest),
                seeds.reimport if seeds else None,
            )
            store.events = repair
            node = Node(
                config,
                api.application(),
                store,
                metrics,
                registries,
                session,
                swarm,
                preheater,
                repair,
                Scrubber(store, config.scrub),
                seeds,
                probes=api.probes_application(),
            )
            parts = Parts(
                node.readiness,
                metrics,
                store,
                config.store.data_dir,
                config.store.cache_max_bytes,
                config.store.cache_low_watermark,
                seeds,
                activity,
                lambda: node.membership,
                session.connected_peers,
            )
            StatusPage(Overview(parts)).add_routes(node.app)
            try:
                yield node
            finally:
                node.ready = False
                await prefetcher.close()
                await downloads.close()
    finally:
        await session.close()
        store.close()


def _open_store(config: Config, on_evict: Callable[[BlobInfo], None]) -> ContentStore:
    """The content store, or a StartupError saying how to make the data dir usable."""
    data_dir = config.store.data_dir
    startup.writable_dir(data_dir, "data dir", "--data-dir")
    try:
        return ContentStore.open(
            data_dir,
            fsync=config.store.fsync,
            max_bytes=config.store.cache_max_bytes,
            low_watermark=config.store.cache_low_watermark,
            on_evict=on_evict,
            canonical_torrent=lambda *chunk: metainfo.from_pieces(*chunk).metainfo,
        )
    except OSError as e:  # a file or directory inside it that this user may not write
        raise startup.not_writable(
            Path(e.filename or data_dir), "data dir", data_dir, "--data-dir", e
        ) from None
    except sqlite3.OperationalError as e:
        full = e.sqlite_errorcode == sqlite3.SQLITE_FULL
        refused = OSError(errno.ENOSPC if full else errno.EACCES, str(e))
        raise startup.not_writable(
            data_dir / "metadata.sqlite", "data dir", data_dir, "--data-dir", refused
        ) from None


_background: set[asyncio.Task[None]] = set()


def _spawn(work: Coroutine[Any, Any, None], name: str) -> None:
    """Run a background job; its failure is logged, never raised into its caller."""
    task = asyncio.get_running_loop().create_task(work, name=name)
    _background.add(task)
    task.add_done_callback(_finished_job)


def _finished_job(task: asyncio.Task[None]) -> None:
    _background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "background job failed", exc_info=task.exception(), extra={"job": task.get_name()}
        )


def _evicted(metrics: NodeMetrics, swarm: Swarm | None, digest: str) -> None:
    metrics.evictions.inc()
    if swarm is not None:
        swarm.forget(digest)


def _peer_stats(metrics: NodeMetrics, stats: PeerStats) -> None:
    metrics.peer_bytes.labels("upload").inc(stats.sent)
    metrics.peer_bytes.labels("download").inc(stats.received)
    metrics.peer_redundant_bytes.inc(stats.redundant)
    metrics.swarm_peers.set(stats.peers)


async def run(config: Config, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT arrives)."""
    stop = stop or Shutdown(SHUTDOWN_GRACE).install()
    async with compose(config) as node, contextlib.AsyncExitStack() as listeners:
        serving = functools.partial(_serving, limit=config.max_connections, metrics=node.metrics)
        site = await listeners.enter_async_context(serving(node.app, config.listen, "--listen"))
        if config.metrics_listen and (probes := node.probes) is not None:
            # Prometheus and the kubelet's probes: a few at a time.
            limit = min(config.max_connections, listener.SIDE_PORT_CONNECTIONS)
            await listeners.enter_async_context(
                serving(probes, config.metrics_listen, "--metrics-listen", limit=limit)
            )
        try:
            port = site.port
            membership = node.membership = _membership(node, port)
            node.swarm.attach(membership)
            node.ready = True
            log.info(
                "node ready",
                extra={
                    "listen": config.listen,
                    "registry": membership.node.registry,
                    "peer": membership.node.peer,
                    "tracker": membership.tracker_address,
                    "data_dir": str(config.store.data_dir),
                    "blobs": len(node.store.blobs()),
                    "default_registry": node.registries.default_ns,
                },
            )
            async with asyncio.TaskGroup() as group:
                members = group.create_task(membership.run(), name="membership")
                seeding = group.create_task(node.swarm.seed_store(), name="seed store")
                repairs = group.create_task(node.repair.run(), name="repair")
                scrub = group.create_task(node.scrubber.run(), name="scrub")
                images = group.create_task(node.seeds.run(), name="images") if node.seeds else None
                await stop.wait()
                log.info("node stopping")
                if images is not None:
                    images.cancel()
                seeding.cancel()
                scrub.cancel()
                repairs.cancel()
                members.cancel()
        finally:
            node.ready = False
    log.info("node stopped")


@asynccontextmanager
async def _serving(
    app: web.Application, listen: str, flag: str, limit: int, metrics: NodeMetrics
) -> AsyncIterator[listener.Listener]:
    """`app` on `listen` until the block ends, at most `limit` client connections open at once;
    a port that cannot be bound is a StartupError."""
    host, port = address.split(listen)
    connections = listener.Connections(limit, metrics.shed_connection)
    try:
        # A request in flight gets a fifth of the grace period to finish, and as long again to
        # end once cancelled (aiohttp waits twice); the rest is for leaving the cluster.
        runner, site = await listener.start(
            app, host, port, connections, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE / 5
        )
    except OSError as e:
        raise startup.listen_failed(listen, flag, e) from None
    try:
        yield site
    finally:
        await runner.cleanup()


def _membership(node: Node, registry_port: int) -> Membership:
    cluster = node.config.cluster
    peer_host, _ = address.split(cluster.peer_listen)
    # The peer port may have been 0 (any): advertise the one libtorrent bound.
    cluster = dataclasses.replace(cluster, peer_listen=address.join(peer_host, node.session.port))
    return Membership(
        cluster,
        address.join(_advertised_host(node.config), registry_port),
        node.swarm.inventory,
        metainfo=node.swarm.metainfo,
        check=node.swarm.check,
        preheat=node.preheater.preheat,
        tls_ca=node.config.cluster.tracker_tls_ca,
        moved=node.metrics.tracker_failover.observe,
    )


def _advertised_host(config: Config) -> str:
    """Where other hosts reach this node: --advertise-host, the listen address, or this host's
    own name as /etc/hosts resolves it."""
    if config.cluster.advertise_host:
        return config.cluster.advertise_host
    host, _ = address.split(config.listen)
    if host not in ("0.0.0.0", "::", ""):
        return host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
