"""`distributed-images tracker`: the cluster's coordination service (DESIGN section 3).

`TrackerServer` is the whole deployable as an object: gRPC (the Tracker and the standard health
service) on `listen`, `/metrics` and `/healthz` on `http_listen`, and a sweeper that expires silent
nodes, stalled leases and old preheat jobs. A node without `--tracker` embeds one on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from distributed_images import listener, pem, startup
from distributed_images.logs import level_field
from distributed_images.settings import as_given
from tracker import address, auth, credentials, httpapi, limits
from tracker.cluster import MAX_NODES, Cluster, Policy
from tracker.errors import StoreUnavailable, TrackerError
from tracker.metrics import TimingInterceptor, TrackerMetrics
from tracker.service import TrackerService
from tracker.store import Replica
from tracker.store.config import StoreConfig, describe, open_store
from tracker.v1 import tracker_pb2_grpc

HELP = "run the tracker: the cluster's gRPC coordination service"
SERVICE = "tracker.v1.Tracker"
GC_THRESHOLDS = (2_000, 10, 100)  # CPython's defaults are (700, 10, 10)
# A call the stopping server cancelled still cleans up in the store: how long the store waits.
CALLS_END_SECONDS = 5.0
HANDSHAKE_SECONDS = 10.0
# A connection with no call in flight for this long is closed (GOAWAY): a client could otherwise
# hold connections it never calls on, a file and some memory each, for ever. Nodes call at every
# heartbeat, and a channel whose connection was closed opens another at its next call.
IDLE_SECONDS = listener.IDLE_SECONDS
# Every node holds one connection. Beyond this many, or what the process's file limit leaves
# room for, gRPC closes a new connection as soon as it is accepted.
MAX_CONNECTIONS = 2 * MAX_NODES
REPLICA_TTL = 3.0  # a replica not heard from for this long is gone (its watches too)

log = logging.getLogger(__name__)


@dataclass
class Config:
    listen: str = field(
        default="0.0.0.0:7070",
        metadata={
            "parse": as_given(address.split),
            "help": "gRPC listen address",
            "metavar": "HOST:PORT",
        },
    )
    http_listen: str | None = field(
        default="0.0.0.0:7071",
        metadata={
            "parse": as_given(address.split),
            "help": "/metrics and /healthz address (empty: off)",
            "metavar": "HOST:PORT",
        },
    )
    secret_file: Path | None = field(
        default=None,
        metadata={
            "help": "the cluster secret (a file): every call must carry a node or operator"
            " credential derived from it (none: open to whoever reaches the port)",
            "metavar": "FILE",
        },
    )
    seeder: list[str] = field(
        default_factory=list,
        metadata={
            "parse": limits.flag_parser(limits.node_id),
            "help": "a node id that may announce seeded tags to the cluster (repeatable)",
            "metavar": "NODE_ID",
        },
    )
    tls_cert: Path | None = field(
        default=None, metadata={"help": "PEM certificate: serve gRPC over TLS", "metavar": "FILE"}
    )
    tls_key: Path | None = field(
        default=None, metadata={"help": "PEM private key of --tls-cert", "metavar": "FILE"}
    )
    advertise: str | None = field(
        default=None,
        metadata={
            "parse": as_given(address.split),
            "help": "address other hosts reach this replica at, as `status` lists it"
            " (default: the host name and the gRPC port)",
            "metavar": "HOST:PORT",
        },
    )
    log_level: str = level_field("info")
    policy: Policy = field(default_factory=Policy)
    storage: StoreConfig = field(default_factory=StoreConfig)


def _server_tls(cert: Path, key: Path | None) -> grpc.ServerCredentials:
    """gRPC's TLS credentials from `--tls-cert` and `--tls-key`, checked first."""
    assert key is not None
    try:
        pem.check_key_pair(cert, key)
    except ValueError as e:
        raise startup.StartupError(f"--tls-cert, --tls-key: {e}") from None
    return auth.server_credentials(cert, key)


def _server_options(reuse_port: bool) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", limits.MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", limits.MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", int(reuse_port)),
        # Nodes ping their long-lived streams; accept that instead of answering GOAWAY.
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_ping_strikes", 0),
        # Calls that arrived while the replica's loop is busy wait in gRPC until it takes them;
        # beyond 1,000 waiting gRPC cancels some (CANCELLED), beyond 3,000 all. A replica of
        # 10,000 nodes held up a second or two (a burst of joins, a slow store) has that many
        # heartbeats waiting: they wait their turn, up to the nodes' own deadlines.
        ("grpc.server.max_pending_requests", MAX_NODES),
        ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_NODES),
        # A connection that never finishes its handshake (TCP open, no HTTP/2 preface or TLS
        # hello) holds one of the process's files until this; gRPC's own default is 120 s.
        ("grpc.server_handshake_timeout_ms", int(HANDSHAKE_SECONDS * 1000)),
        ("grpc.max_connection_idle_ms", int(IDLE_SECONDS * 1000)),
        ("grpc.max_allowed_incoming_connections", listener.file_bound(MAX_CONNECTIONS)),
    ]


class TrackerServer:
    """Start with `await start()` (or `async with`); `port` and `http_port` are then bound."""

    def __init__(
        self, config: Config, *, reuse_port: bool = False, secret: bytes | None = None
    ) -> None:
        policy = config.policy
        if policy.node_ttl <= policy.heartbeat_interval:
            raise startup.StartupError(
                f"--node-ttl ({policy.node_ttl:g} s) must be longer than --heartbeat-interval"
                f" ({policy.heartbeat_interval:g} s), or every node is forgotten between two"
                " of its heartbeats: three times as long is usual"
            )
        if min(policy.lease_ttl, policy.fanout) <= 0:
            raise startup.StartupError("--lease-ttl and --fanout must be more than 0")
        if (config.tls_cert is None) != (config.tls_key is None):
            raise startup.StartupError(
                "--tls-cert and --tls-key go together: give both, or neither for plain gRPC"
            )
        self._tls = _server_tls(config.tls_cert, config.tls_key) if config.tls_cert else None
        startup.usable_ca_file(config.storage.store_tls_ca, "--store-tls-ca")
        self.config = config
        self.secret = secret if secret is not None else _secret(config)
        shared = config.storage.shared
        # Replicas sharing a store share its times too: wall-clock time, not this process's.
        clock = time.time if shared else time.monotonic
        rng = random.Random()
        store = open_store(config.storage, policy.lease_ttl, rng)
        self.cluster = Cluster(policy, clock=clock, rng=rng, store=store)
        self.metrics = TrackerMetrics()
        self.health = health.aio.HealthServicer()
        self.port = 0
        self.http_port: int | None = None
        self._reuse_port = reuse_port
        self._server: grpc.aio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._servicer: TrackerService | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._serving = False

    @property
    def address(self) -> str:
        host, _ = address.split(self.config.listen)
        reachable = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
        return address.join(reachable, self.port)

    @property
    def advertised(self) -> str:
        """How `status` names this replica to an operator."""
        if self.config.advertise:
            return self.config.advertise
        host, _ = address.split(self.config.listen)
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return address.join(host, self.port)

    async def start(self) -> None:
        verifier = credentials.Verifier(self.secret) if self.secret else None
        gate = auth.Gate(verifier, self.config.seeder)
        interceptors = [
            auth.AuthInterceptor(gate, f"/{SERVICE}/"),
            TimingInterceptor(self.metrics, f"/{SERVICE}/"),
        ]
        server = grpc.aio.server(
            interceptors=interceptors, options=_server_options(self._reuse_port)
        )
        servicer = self._servicer = TrackerService(self.cluster, self.metrics)
        tracker_pb2_grpc.add_TrackerServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        self.port = self._bind(server)
        self._server = server
        await self.cluster.start()
        # Live from the first call: the watches a replica serves count only while it beats.
        with contextlib.suppress(TrackerError):  # the store is down: the sweeper beats later
            await self._beat()
        await server.start()
        for name in ("", SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._serving = True
        if self.config.http_listen:
            app = httpapi.build(
                self.metrics.registry, lambda: self._serving, self.ready, self.refresh_metrics
            )
            self._runner, self.http_port = await httpapi.serve(app, self.config.http_listen)
        self._sweeper = asyncio.create_task(self._sweep(), name="tracker-sweeper")

    def _bind(self, server: grpc.aio.Server) -> int:
        listen = self.config.listen
        try:
            if self._tls is not None:
                port = server.add_secure_port(listen, self._tls)
            else:
                port = server.add_insecure_port(listen)
        except RuntimeError as e:
            raise OSError(f"tracker cannot listen on {listen}: {e}") from None
        if not port:
            raise OSError(f"tracker cannot listen on {listen}")
        return int(port)

    async def stop(self, grace: float = 1.0) -> None:
        self._serving = False
        await self.health.enter_graceful_shutdown()
        if self._sweeper is not None:
            # redis-py may swallow the cancellation of a call in progress: the loop also ends
            # once it sees the replica stopping, after that call.
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self.cluster.hub.close_all()  # every stream ends: its node goes to another replica
        if self._server is not None:
            await self._server.stop(grace)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._servicer is not None and not await self._servicer.calls.ended(CALLS_END_SECONDS):
            log.warning("tracker calls still running as the store closes")
        await self.cluster.close()

    async def __aenter__(self) -> TrackerServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _sweep(self) -> None:
        """Beat as a live replica, and sweep when this replica is the sweeper."""
        policy = self.config.policy
        period = min(1.0, max(0.02, min(policy.lease_ttl, policy.node_ttl) / 10))
        store, cluster = self.cluster.store, self.cluster
        while self._serving:
            await asyncio.sleep(period)
            try:
                await self._beat()
                if await store.replicas.sweeper(cluster.instance, REPLICA_TTL):
                    await cluster.sweep()
            except StoreUnavailable:
                pass  # the store says so itself, once an outage
            except Exception:
                log.exception("sweep failed")

    async def _beat(self) -> None:
        """Tell the store this replica is live for REPLICA_TTL more seconds."""
        cluster = self.cluster
        replica = Replica(cluster.instance, self.advertised, cluster.clock(), cluster.started_at)
        await cluster.store.replicas.beat(replica, REPLICA_TTL)

    async def ready(self) -> bool:
        """Serving, and the store answers (a replica without its store sends nodes upstream)."""
        return self._serving and await self.cluster.store.healthy()

    async def refresh_metrics(self) -> None:
        healthy = await self.cluster.store.healthy()
        self.metrics.store_up.set(int(healthy))
        if not healthy:
            return
        try:
            await self.metrics.refresh(self.cluster.store)
        except TrackerError as e:
            log.warning("reading the metrics from the store failed", extra={"error": e.message})


def _secret(config: Config) -> bytes | None:
    return credentials.read_secret(config.secret_file) if config.secret_file else None


def tune_garbage_collector() -> None:
    """Keep collections rare and short in the tracker process (not in a node that embeds one):
    freeze what start-up made (modules, classes: never garbage) and collect the young generation
    somewhat less often than CPython does, so fewer objects of in-flight RPCs reach the old
    generations. Each RPC leaves reference cycles (gRPC's own), so the young generation is
    collected often whatever the threshold, and a collection's pause grows with it: at 20,000
    a young collection took 8-33 ms on average (several a second under load) and one of the
    middle generation 38-170 ms, at 2,000 1.0-1.4 ms and 3-8 ms. A full collection traverses
    every open Tasks stream and, in memory, every node's record (10,000 nodes: 70-470 ms), and
    calls that arrive meanwhile wait unseen by the Locate histogram: it waits for 100 collections
    of the middle generation, not 10. With CPython's 700, the bench (2,000 nodes, 100,000
    chunks) saw a full collection every few seconds, each a Locate latency spike."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(config: Config) -> int:
    tune_garbage_collector()
    startup.check_port_free(config.listen, "--listen")
    if config.http_listen:
        startup.check_port_free(config.http_listen, "--http-listen")
    try:
        server = TrackerServer(config)
    except credentials.CredentialError as e:
        raise startup.StartupError(f"cannot start the tracker: {e}") from None
    await server.start()
    log.info(
        "tracker ready",
        extra={
            "grpc": config.listen,
            "port": server.port,
            "http_port": server.http_port,
            "tls": config.tls_cert is not None,
            "credentials": "required" if server.secret else "none: open to anyone",
            "seeders": ",".join(config.seeder),
            "store": describe(config.storage.store),
        },
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        log.info("tracker stopping")
        await server.stop()
    return 0


def main(config: Config) -> int:
    listener.raise_file_limit()
    return asyncio.run(serve(config))
