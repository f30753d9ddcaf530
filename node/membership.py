"""The node's place in the cluster: join the tracker, heartbeat, keep it told what this node holds.

`run()` is one long-running task of the node. It joins, announces the whole inventory, heartbeats,
and takes work orders (preheat, republish, check) from the tracker's Tasks stream. `--tracker`
may name several tracker replicas (a list, or a DNS name with several addresses): the client
moves to another replica when its own fails, and the Tasks stream is opened again there; once
its calls are answered there and every stream is open there, it logs how long the move took
("moved to another tracker replica", `seconds`) and counts it in a histogram. Whenever the
tracker answers "unknown node" (it restarted, its store started afresh, or it forgot a silent
node), the node joins again and re-announces everything: the tracker's state is soft and the
nodes rebuild it. While no replica is reachable the node keeps serving; membership only retries
with backoff. Cancelling `run()` leaves the cluster cleanly.

Without `--tracker` the node runs a tracker in-process on 127.0.0.1 (the embedded default),
with a secret made at start and known only to this process.

The node's id is `--node-id`, else the one its credential (`--credential-file`) names, else its
registry address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

from distributed_images import logs
from node.config import ClusterConfig
from tracker import address, credentials
from tracker.app import Config as TrackerConfig
from tracker.app import TrackerServer
from tracker.backoff import Backoff
from tracker.client import (
    CheckOrder,
    HeldBlob,
    Inventory,
    Load,
    NodeAddress,
    Order,
    PreheatOrder,
    RepublishOrder,
    Session,
    TrackerClient,
)
from tracker.errors import MetainfoUnconfirmed, NodeUnknown, PermissionDenied, TrackerError

log = logging.getLogger(__name__)

LEAVE_TIMEOUT = 2.0
REJOIN_WAIT = 5.0  # seconds a pull waits for this node to join again, at least
MAX_RUNNING_ORDERS = 8

InventorySource = Callable[[], Awaitable[Inventory]]
Preheater = Callable[[str], Awaitable[None]]
MetainfoSource = Callable[[str, int], Awaitable[bytes | None]]
ChunkChecker = Callable[[str, Sequence[int]], Awaitable[None]]


class Membership:
    def __init__(
        self,
        config: ClusterConfig,
        registry_address: str,
        inventory: InventorySource,
        *,
        node_id: str | None = None,
        load: Callable[[], Load] | None = None,
        preheat: Preheater | None = None,
        metainfo: MetainfoSource | None = None,
        check: ChunkChecker | None = None,
        tls_ca: Path | None = None,
        moved: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        credential = _credential(config)
        claimed = credentials.parse(credential).name if credential else None
        node_id = node_id or config.node_id or claimed or registry_address
        if claimed is not None and claimed != node_id:
            raise credentials.CredentialError(
                f"the credential is node {claimed!r}'s, but this node's id is {node_id!r}"
            )
        self.node = NodeAddress(
            node_id=node_id,
            registry=registry_address,
            peer=_peer_address(config, registry_address),
            zone=config.zone,
        )
        self.instance = uuid.uuid4().hex
        self._inventory = inventory
        self._load = load
        self._preheat = preheat
        self._metainfo = metainfo
        self._check = check
        self._reservation: socket.socket | None = None
        self._embedded_secret: bytes | None = None
        if config.tracker is None:
            self._reservation = _reserve_loopback_port()
            port = self._reservation.getsockname()[1]
            self.tracker_address = f"127.0.0.1:{port}"
            self._embedded_secret = credentials.new_secret()
            credential = credentials.issue(self._embedded_secret, credentials.Role.NODE, node_id)
        else:
            self.tracker_address = config.tracker
        self.client = TrackerClient(self.tracker_address, credential=credential, tls_ca=tls_ca)
        self.client.attachment.report = self._moved
        self._on_moved = moved
        self.session: Session | None = None
        self._left_at: float | None = None  # when the node last lost its session
        self._rejoined_at: float | None = None  # when it last joined a tracker that forgot it
        self.joins = 0  # how many times this node joined (a restarted tracker makes it rejoin)
        self._heartbeat_interval = 0.0  # the last session's
        self._resync = False
        self._orders: set[asyncio.Task[None]] = set()
        self._joined = asyncio.Condition()  # notified on each join, once announced
        self._beat_soon = asyncio.Event()  # a pull heard the tracker forgot this node

    @property
    def node_id(self) -> str:
        return self.node.node_id

    @property
    def embedded(self) -> bool:
        """Whether this node runs its own in-process tracker (standalone)."""
        return self.config.tracker is None

    @property
    def joined(self) -> bool:
        return self.session is not None

    def joined_within(self, seconds: float) -> bool:
        """Whether the node is joined, or was until less than `seconds` ago (its tracker is
        restarting, or it is moving to another replica)."""
        return self.joined or self.unsettled_for(seconds) > 0

    def unsettled_for(self, grace: float) -> float:
        """Seconds for which what the tracker knows may still be incomplete: the node lost its
        tracker, or joined again one that had forgotten it (restarted, its state rebuilt as the
        nodes join again), less than `grace` ago. 0 when settled."""
        since = self._rejoined_at if self.joined else self._left_at
        return 0.0 if since is None else max(0.0, since + grace - time.monotonic())

    async def wait_joined(self, timeout: float) -> bool:
        """Wait until the node is joined, at most `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout), self._joined:
                await self._joined.wait_for(lambda: self.joined)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        embedded: TrackerServer | None = None
        try:
            if self._reservation is not None:
                try:
                    embedded = await self._start_embedded()
                except (OSError, RuntimeError):
                    # Without its tracker the node still serves from cache and upstream.
                    log.exception("the embedded tracker did not start")
            await self._stay_joined()
        finally:
            await self._leave()
            await self.client.close()
            if embedded is not None:
                await embedded.stop(grace=0.2)
            if self._reservation is not None:
                self._reservation.close()

    async def announce(self, blob: HeldBlob) -> None:
        """Tell the tracker about a newly completed blob; never raises. A failed announcement is
        made good by the next full re-announcement."""
        if self.session is None:
            return  # the next join announces the whole inventory, this blob included
        try:
            await self.client.announce(self.node_id, [blob])
        except TrackerError as e:
            log.warning("announce failed; will re-announce", extra={"error": e.message})
            self._resync = True

    async def rejoined(self, since: int) -> bool:
        """Wait until this node joined again after `since` joins: a pull whose tracker forgot the
        node asks, and the heartbeat goes at once so the node finds out too. False if it did not
        within two heartbeat intervals (REJOIN_WAIT at least)."""
        self._beat_soon.set()
        wait = max(2 * self._heartbeat_interval, REJOIN_WAIT)
        try:
            async with asyncio.timeout(wait), self._joined:
                await self._joined.wait_for(lambda: self.joins > since)
        except TimeoutError:
            return False
        return True

    async def _start_embedded(self) -> TrackerServer:
        config = TrackerConfig(listen=self.tracker_address, http_listen=None, seeder=[self.node_id])
        server = TrackerServer(config, reuse_port=True, secret=self._embedded_secret)
        await server.start()
        log.info("embedded tracker started", extra={"tracker": self.tracker_address})
        return server

    async def _stay_joined(self) -> None:
        """Join, then heartbeat. When no tracker replica answers, try the heartbeat again after
        a backoff: only a tracker that no longer knows this node (it restarted, or its store
        started afresh) makes it join again, since joining again ends its pulls' watches."""
        backoff = Backoff()
        unreachable = logs.Throttle()
        session: Session | None = None
        while True:
            try:
                if session is None:
                    session = await self._join()
                else:
                    await self._beat()
                    self.session = session
                    log.info("the tracker answers again", extra={"tracker": self.client.target})
                    async with self._joined:
                        self._joined.notify_all()
                backoff.reset()
                unreachable.reset()
                await self._heartbeat(session)
            except NodeUnknown:
                log.info("the tracker does not know this node: joining again")
                session = None
            except TrackerError as e:
                delay = backoff.next()
                if times := unreachable.due():
                    extra = {"tracker": self.tracker_address, "error": e.message, "times": times}
                    log.warning("tracker unreachable; serving on", extra=extra)
                await asyncio.sleep(delay)
            except Exception:
                log.exception("membership failed; retrying")
                await asyncio.sleep(backoff.next())
            finally:
                if self.session is not None:
                    self._left_at = time.monotonic()
                self.session = None

    async def _join(self) -> Session:
        session = await self.client.join(self.node, self.instance)
        self.session = session
        self._heartbeat_interval = session.heartbeat_interval
        self._resync = False
        self.joins += 1
        if self.joins > 1:
            self._rejoined_at = time.monotonic()
        await self._announce_all()
        log.info(
            "joined the cluster",
            extra={"tracker": self.tracker_address, "node": self.node_id, "joins": self.joins},
        )
        async with self._joined:
            self._joined.notify_all()
        return session

    def _moved(self, seconds: float) -> None:
        """The tracker client left a replica that failed, and is now attached to another: its
        calls answered, this node's task stream and its pulls' watches open there."""
        interval = self._heartbeat_interval
        log.info(
            "moved to another tracker replica; task stream and watches open there",
            extra={
                "tracker": self.client.target,
                "seconds": round(seconds, 3),
                "heartbeat_intervals": round(seconds / interval, 2) if interval else "-",
            },
        )
        if self._on_moved is not None:
            self._on_moved(seconds)

    async def _announce_all(self) -> None:
        inventory = await self._inventory()
        await self.client.announce(self.node_id, inventory.blobs)
        if not inventory.refs:
            return
        try:
            await self.client.announce(self.node_id, [], inventory.refs)
        except PermissionDenied as e:
            log.warning(
                "the tracker does not let this node seed tags to the cluster; its images"
                " directory serves this host only",
                extra={"node": self.node_id, "error": e.message},
            )

    async def _heartbeat(self, session: Session) -> None:
        """Heartbeat until the tracker forgets this node or cannot be reached (both raise)."""
        async with self._task_stream():
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(session.heartbeat_interval):
                        await self._beat_soon.wait()
                self._beat_soon.clear()
                await self._beat()

    async def _beat(self) -> None:
        await self.client.heartbeat(self.node_id, self._load() if self._load else None)
        if self._resync:
            self._resync = False
            await self._announce_all()

    @contextlib.asynccontextmanager
    async def _task_stream(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self._take_orders(), name="tracker-tasks")
        try:
            yield
        finally:
            task.cancel()
            # gather, not `await task` under suppress(CancelledError): that would swallow this
            # task's own cancellation too, should it come while the orders task winds down.
            await asyncio.gather(task, return_exceptions=True)

    async def _take_orders(self) -> None:
        backoff = Backoff(initial=0.5)
        while True:
            opened = time.monotonic()
            try:
                async for order in self.client.tasks(self.node_id):
                    backoff.reset()
                    self._start_order(order)
            except TrackerError as e:
                log.debug("task stream ended", extra={"error": e.message})
            if time.monotonic() - opened > backoff.maximum:
                backoff.reset()  # it ran a while: open the next one soon (another replica)
            await asyncio.sleep(backoff.next())

    def _start_order(self, order: Order) -> None:
        if len(self._orders) >= MAX_RUNNING_ORDERS:
            log.warning("too many tracker orders running; dropping one", extra={"order": order})
            return
        task = asyncio.create_task(self._carry_out(order))
        self._orders.add(task)
        task.add_done_callback(self._orders.discard)

    async def _carry_out(self, order: Order) -> None:
        try:
            if isinstance(order, PreheatOrder):
                await self._carry_out_preheat(order)
            elif isinstance(order, RepublishOrder):
                await self._carry_out_republish(order)
            elif isinstance(order, CheckOrder) and self._check is not None:
                await self._check(order.digest, order.chunks)
        except TrackerError as e:
            log.warning("could not report a tracker order", extra={"error": e.message})

    async def _carry_out_preheat(self, order: PreheatOrder) -> None:
        if self._preheat is None:
            await self.client.report_task(
                self.node_id, order.task_id, False, "this node cannot preheat"
            )
            return
        try:
            await self._preheat(order.image)
        except Exception as e:
            log.warning("preheat failed", extra={"image": order.image, "error": str(e)})
            await self.client.report_task(self.node_id, order.task_id, False, str(e) or repr(e))
        else:
            await self.client.report_task(self.node_id, order.task_id, True)

    async def _carry_out_republish(self, order: RepublishOrder) -> None:
        if self._metainfo is None:
            return
        for chunk in order.chunks:
            metainfo = await self._metainfo(order.digest, chunk)
            if metainfo:
                # Unconfirmed until a second holder publishes the same: expected, not a failure.
                with contextlib.suppress(MetainfoUnconfirmed):
                    await self.client.publish(
                        self.node_id, order.digest, order.size, order.chunk_count, chunk, metainfo
                    )

    async def _leave(self) -> None:
        for task in list(self._orders):
            task.cancel()
        if self.session is None and self.joins == 0:
            return
        try:
            await asyncio.wait_for(self.client.leave(self.node_id), LEAVE_TIMEOUT)
            log.info("left the cluster", extra={"node": self.node_id})
        except (TrackerError, TimeoutError) as e:
            log.info("could not leave the cluster cleanly", extra={"error": str(e)})


def _credential(config: ClusterConfig) -> str | None:
    if config.credential_file is None:
        return None
    return credentials.read_credential(config.credential_file)


def _peer_address(config: ClusterConfig, registry_address: str) -> str:
    peer_host, peer_port = address.split(config.peer_listen)
    host = config.advertise_host
    if not host:
        unspecified = peer_host in ("0.0.0.0", "::", "")
        host = address.split(registry_address)[0] if unspecified else peer_host
    return address.join(host, peer_port)


def _reserve_loopback_port() -> socket.socket:
    """A bound, not listening, SO_REUSEPORT socket: it keeps the port ours until the embedded
    tracker (which binds with SO_REUSEPORT too) takes it, so the client can be made first."""
    reservation = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reservation.bind(("127.0.0.1", 0))
    return reservation
