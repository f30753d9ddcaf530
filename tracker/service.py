"""The gRPC face of the cluster state: requests in, domain calls, responses out.

Each method translates a request into one `Cluster` call and its result into a response; domain
errors become a status with the `di-error` trailing metadata (the table is in `tracker.errors`).
Nothing here decides anything about placement.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any

import grpc

from tracker import auth, limits, witnesses
from tracker.cluster import ChunkView, Cluster, Directive, Holding, Load
from tracker.errors import ERROR_KEY, MetainfoUnconfirmed, TrackerError, TrackerUnavailable
from tracker.metrics import TrackerMetrics
from tracker.store import Store
from tracker.tasks import CheckOrder, Order, PreheatJob, PreheatOrder, TaskState
from tracker.v1 import tracker_pb2 as pb
from tracker.v1 import tracker_pb2_grpc

log = logging.getLogger(__name__)

DIRECTIVES = {
    Directive.FETCH: pb.DIRECTIVE_FETCH,
    Directive.WAIT: pb.DIRECTIVE_WAIT,
    Directive.SWARM: pb.DIRECTIVE_SWARM,
}
TASK_STATES = {
    TaskState.PENDING: pb.TASK_STATE_PENDING,
    TaskState.DELIVERED: pb.TASK_STATE_DELIVERED,
    TaskState.DONE: pb.TASK_STATE_DONE,
    TaskState.FAILED: pb.TASK_STATE_FAILED,
}
DEFAULT_STATUS_BLOBS = 1000
REPLICA_STOPPING = TrackerUnavailable("this tracker replica stops: ask another")


async def abort(context: grpc.aio.ServicerContext, error: TrackerError) -> None:
    await context.abort(error.code, error.message, trailing_metadata=((ERROR_KEY, error.kind),))


class OpenCalls:
    """The calls this replica is answering. A call the stopping server cancels still runs its
    cleanup (a Watch forgets its watcher in the store), so the store closes once they ended:
    a command after the close would open a connection again that nothing closes."""

    def __init__(self) -> None:
        self._count = 0
        self._none = asyncio.Event()
        self._none.set()

    def __enter__(self) -> None:
        self._count += 1
        self._none.clear()

    def __exit__(self, *exc: object) -> None:
        self._count -= 1
        if not self._count:
            self._none.set()

    async def ended(self, timeout: float) -> bool:
        """Wait up to `timeout` for every call to end; whether they did."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._none.wait()
        return self._none.is_set()


def streamed(
    method: Callable[[TrackerService, Any, grpc.aio.ServicerContext], AsyncGenerator[Any, None]],
) -> Callable[[TrackerService, Any, grpc.aio.ServicerContext], AsyncGenerator[Any, None]]:
    """Count a stream among the open calls until its generator has finished its cleanup."""

    @functools.wraps(method)
    async def wrapper(
        self: TrackerService, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[Any, None]:
        with self.calls:
            async with contextlib.aclosing(method(self, request, context)) as messages:
                async for message in messages:
                    yield message

    return wrapper


def unary(
    method: Callable[[TrackerService, Any], Awaitable[Any]],
) -> Callable[[TrackerService, Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    """Run a domain call; map its domain error to a status."""

    @functools.wraps(method)
    async def wrapper(self: TrackerService, request: Any, context: grpc.aio.ServicerContext) -> Any:
        with self.calls:
            try:
                return await method(self, request)
            except TrackerError as error:
                self.metrics.count_error(method.__name__, error.code)
                await abort(context, error)
            except Exception:
                # A bug, not the caller's fault: say so, keep serving.
                log.exception("%s failed", method.__name__)
                self.metrics.count_error(method.__name__, grpc.StatusCode.INTERNAL)
                await context.abort(
                    grpc.StatusCode.INTERNAL, f"{method.__name__} failed in the tracker"
                )

    return wrapper


def load_of(message: pb.Load) -> Load:
    return Load(
        message.uploads,
        message.downloads,
        message.upload_bytes_per_second,
        message.download_bytes_per_second,
        message.store_bytes,
    )


def load_message(load: Load) -> pb.Load:
    return pb.Load(
        uploads=load.uploads,
        downloads=load.downloads,
        upload_bytes_per_second=load.upload_bytes_per_second,
        download_bytes_per_second=load.download_bytes_per_second,
        store_bytes=load.store_bytes,
    )


async def placement_message(
    cluster: Cluster, digest: str, chunk_count: int, views: Sequence[ChunkView]
) -> pb.Placement:
    """Views as one message in which each peer is written once and chunks refer to it. A peer
    that left since the views were made is left out."""
    nodes = await cluster.store.members.addresses({c.node_id for v in views for c in v.peers})
    index: dict[str, int] = {}
    peers: list[pb.Peer] = []
    chunks = []
    for view in views:
        refs, complete = [], []
        for candidate in view.peers:
            i = index.get(candidate.node_id)
            if i is None:
                node = nodes.get(candidate.node_id)
                if node is None:
                    continue
                i = index[candidate.node_id] = len(peers)
                peers.append(
                    pb.Peer(node_id=node.id, registry=node.registry, peer=node.peer, zone=node.zone)
                )
            refs.append(i)
            if candidate.complete:
                complete.append(i)
        chunks.append(
            pb.ChunkPlacement(
                index=view.index,
                directive=DIRECTIVES[view.directive],
                metainfo=view.metainfo or b"",
                peers=refs,
                complete=complete,
                lease_holder=view.lease_holder or "",
                lease_seconds=view.lease_seconds,
            )
        )
    return pb.Placement(digest=digest, chunk_count=chunk_count, peers=peers, chunks=chunks)


def job_message(job: PreheatJob) -> pb.PreheatStatusResponse:
    targets = [
        pb.TargetStatus(node_id=node_id, state=TASK_STATES[t.state], message=t.message)
        for node_id, t in job.targets.items()
    ]
    return pb.PreheatStatusResponse(
        task_id=job.id, image=job.image, targets=targets, finished=job.finished
    )


def task_message(order: Order) -> pb.Task:
    if isinstance(order, PreheatOrder):
        return pb.Task(task_id=order.task_id, preheat=pb.PreheatTask(image=order.image))
    chunks = pb.ChunksTask(
        digest=order.digest, size=order.size, chunk_count=order.chunk_count, chunks=order.chunks
    )
    if isinstance(order, CheckOrder):
        return pb.Task(task_id=order.task_id, check=chunks)
    return pb.Task(task_id=order.task_id, republish=chunks)


class TrackerService(tracker_pb2_grpc.TrackerServicer):
    def __init__(self, cluster: Cluster, metrics: TrackerMetrics) -> None:
        self.cluster = cluster
        self.metrics = metrics
        self.calls = OpenCalls()

    # ---- membership ----

    @unary
    async def Join(self, request: pb.JoinRequest) -> pb.JoinResponse:
        node = request.node
        session = await self.cluster.join(
            node.node_id, node.registry, node.peer, node.zone, request.instance
        )
        log.info("node joined", extra={"node": node.node_id, "zone": node.zone})
        return pb.JoinResponse(
            heartbeat_interval_seconds=session.heartbeat_interval,
            node_ttl_seconds=session.node_ttl,
            lease_ttl_seconds=session.lease_ttl,
            tracker_instance=session.tracker_instance,
        )

    @unary
    async def Heartbeat(self, request: pb.HeartbeatRequest) -> pb.HeartbeatResponse:
        await self.cluster.heartbeat(request.node_id, load_of(request.load))
        return pb.HeartbeatResponse()

    @unary
    async def Leave(self, request: pb.LeaveRequest) -> pb.LeaveResponse:
        await self.cluster.leave(request.node_id)
        log.info("node left", extra={"node": request.node_id})
        return pb.LeaveResponse()

    # ---- inventory ----

    @unary
    async def Announce(self, request: pb.AnnounceRequest) -> pb.AnnounceResponse:
        holdings = [
            Holding(b.digest, b.size, b.chunk_count, tuple(b.complete), tuple(b.partial))
            for b in request.blobs
        ]
        refs = [(r.ref, r.digest) for r in request.refs]
        refused = await self.cluster.announce(request.node_id, holdings, refs)
        return pb.AnnounceResponse(refused=refused)

    @unary
    async def Withdraw(self, request: pb.WithdrawRequest) -> pb.WithdrawResponse:
        refs = [(r.ref, r.digest) for r in request.refs]
        await self.cluster.withdraw(
            request.node_id, list(request.digests), refs, request.corrupt, list(request.chunks)
        )
        if request.corrupt:
            log.warning(
                "blobs failed their digest check; their metainfo is forgotten",
                extra={"node": request.node_id, "digests": ",".join(request.digests)},
            )
        return pb.WithdrawResponse()

    # ---- placement ----

    @unary
    async def Locate(self, request: pb.LocateRequest) -> pb.LocateResponse:
        views = await self.cluster.locate(
            request.node_id,
            request.digest,
            request.size,
            request.chunk_count,
            request.chunks,
            request.max_leases,
            with_metainfo=not request.omit_metainfo,
            failed=request.failed_chunks,
        )
        placement = await placement_message(
            self.cluster, request.digest, request.chunk_count, views
        )
        return pb.LocateResponse(placement=placement)

    @unary
    async def RenewLease(self, request: pb.RenewLeaseRequest) -> pb.RenewLeaseResponse:
        left = await self.cluster.renew(
            request.node_id, request.digest, request.chunk, request.progress_bytes, request.fetched
        )
        return pb.RenewLeaseResponse(held=left is not None, lease_seconds=left or 0.0)

    @unary
    async def ReleaseLease(self, request: pb.ReleaseLeaseRequest) -> pb.ReleaseLeaseResponse:
        await self.cluster.release(request.node_id, request.digest, request.chunk)
        log.info(
            "lease released",
            extra={"node": request.node_id, "digest": request.digest, "chunk": request.chunk},
        )
        return pb.ReleaseLeaseResponse()

    @unary
    async def Publish(self, request: pb.PublishRequest) -> pb.PublishResponse:
        if not await self._vouched_for(request):
            await self.cluster.unconfirmed(request.node_id, request.digest, request.chunk)
            raise MetainfoUnconfirmed(
                "metainfo from a node without the chunk's lease is taken once a second node"
                " publishes the same"
            )
        await self.cluster.publish(
            request.node_id,
            request.digest,
            request.size,
            request.chunk_count,
            request.chunk,
            request.metainfo,
        )
        return pb.PublishResponse()

    async def _vouched_for(self, request: pb.PublishRequest) -> bool:
        """Whether the caller may set the chunk's metainfo (`tracker.witnesses`). Metainfo
        already known is vouched for: the same again is a no-op, another is a conflict."""
        limits.digest(request.digest)
        limits.metainfo(request.metainfo)
        store = self.cluster.store
        lease = await store.leases.get(request.digest, request.chunk)
        return (
            (lease is not None and lease.holder == request.node_id)
            or auth.caller().seeder
            or await store.blobs.metainfo(request.digest, request.chunk) is not None
            or await store.blobs.witness(
                request.digest,
                request.chunk,
                witnesses.fingerprint(request.metainfo),
                request.node_id,
            )
        )

    @streamed
    async def Watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[pb.WatchEvent, None]:
        try:
            watcher = await self.cluster.watch(
                request.node_id, request.digest, request.size, request.chunk_count
            )
        except TrackerError as error:
            await abort(context, error)
            return
        try:
            yield pb.WatchEvent(subscribed=True)
            if request.resume:
                for chunk in range(request.chunk_count):
                    watcher.mark(chunk)
            while (changed := await watcher.changes()) is not None:
                try:
                    views = await self.cluster.view(
                        request.node_id, request.digest, request.size, request.chunk_count, changed
                    )
                    if views:
                        placement = await placement_message(
                            self.cluster, request.digest, request.chunk_count, views
                        )
                        yield pb.WatchEvent(placement=placement)
                except TrackerError as error:
                    await abort(context, error)
                    return
            if watcher.stopping:
                await abort(context, REPLICA_STOPPING)
        finally:
            with contextlib.suppress(TrackerError):  # the store is gone: it forgets it anyway
                await self.cluster.unwatch(watcher)

    # ---- seeded references ----

    @unary
    async def Resolve(self, request: pb.ResolveRequest) -> pb.ResolveResponse:
        resolutions = []
        for digest, holders, nodes in await self.cluster.resolve(request.ref, request.node_id):
            peers = [
                pb.Peer(node_id=n.id, registry=n.registry, peer=n.peer, zone=n.zone) for n in nodes
            ]
            shape = await self.cluster.store.blobs.shape(digest)
            size = shape[0] if shape is not None else 0
            resolutions.append(
                pb.Resolution(digest=digest, holders=holders, nodes=peers, size=size)
            )
        return pb.ResolveResponse(resolutions=resolutions)

    # ---- preheat ----

    @unary
    async def Preheat(self, request: pb.PreheatRequest) -> pb.PreheatResponse:
        job = await self.cluster.preheat(
            request.image, request.count, request.zone, request.timeout_seconds
        )
        log.info("preheat", extra={"task": job.id, "image": job.image, "targets": len(job.targets)})
        return pb.PreheatResponse(task_id=job.id, targets=list(job.targets))

    @unary
    async def PreheatStatus(self, request: pb.PreheatStatusRequest) -> pb.PreheatStatusResponse:
        return job_message(await self.cluster.preheat_status(request.task_id))

    @streamed
    async def Tasks(
        self, request: pb.TasksRequest, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[pb.Task, None]:
        try:
            inbox = await self.cluster.open_inbox(request.node_id)
        except TrackerError as error:
            await abort(context, error)
            return
        try:
            await context.send_initial_metadata(())  # the inbox is open: the node may count on it
            while (order := await self.cluster.next_order(inbox)) is not None:
                yield task_message(order)
            if inbox.stopping:
                await abort(context, REPLICA_STOPPING)
        except TrackerError as error:
            await abort(context, error)
        finally:
            self.cluster.close_inbox(inbox)

    @unary
    async def ReportTask(self, request: pb.ReportTaskRequest) -> pb.ReportTaskResponse:
        await self.cluster.report(request.node_id, request.task_id, request.ok, request.message)
        return pb.ReportTaskResponse()

    # ---- status ----

    @unary
    async def Status(self, request: pb.StatusRequest) -> pb.StatusResponse:
        return await status_message(self.cluster, request.include_blobs, request.max_blobs)


async def status_message(
    cluster: Cluster, include_blobs: bool, max_blobs: int
) -> pb.StatusResponse:
    store = cluster.store
    now = cluster.clock()
    leases = await store.leases.all()
    held: dict[str, int] = {}
    for lease in leases:
        held[lease.holder] = held.get(lease.holder, 0) + 1
    nodes = []
    for node in sorted(await store.members.all(), key=lambda n: n.id):
        holdings = (await store.peers.holdings(node.id)).values()
        nodes.append(
            pb.NodeStatus(
                node_id=node.id,
                registry=node.registry,
                peer=node.peer,
                zone=node.zone,
                blobs=len(holdings),
                chunks=sum(c.bit_count() for c, _ in holdings),
                partial_chunks=sum(p.bit_count() for _, p in holdings),
                leases=held.get(node.id, 0),
                seconds_since_heartbeat=now - node.last_seen,
                seconds_since_join=now - node.joined_at,
                load=load_message(node.load),
            )
        )
    bound = max_blobs or DEFAULT_STATUS_BLOBS
    shapes = await store.blobs.shapes()
    digests = sorted(shapes)
    shown = digests[:bound] if include_blobs else []
    leased: dict[str, int] = {}
    for lease in leases:
        leased[lease.digest] = leased.get(lease.digest, 0) + 1
    replicas = [
        pb.ReplicaStatus(instance=r.instance, address=r.address, uptime_seconds=now - r.started_at)
        for r in await store.replicas.live()
    ]
    return pb.StatusResponse(
        tracker_instance=await store.cluster_id(),
        uptime_seconds=now - cluster.started_at,
        replicas=replicas,
        replica=cluster.instance,
        nodes=nodes,
        blobs=[await blob_message(store, d, shapes[d], leased.get(d, 0)) for d in shown],
        blobs_truncated=include_blobs and len(digests) > bound,
        blob_count=len(digests),
        chunk_count=sum([await store.peers.chunks_held(d) for d in digests]),
        lease_count=len(leases),
        preheat_tasks=await store.tasks.count(),
    )


async def blob_message(
    store: Store, digest: str, shape: tuple[int, int], leases: int
) -> pb.BlobStatus:
    size, chunk_count = shape
    full = (1 << chunk_count) - 1
    holders = await store.peers.holders(digest)
    swarm = await store.peers.complete_counts(digest, range(chunk_count))
    return pb.BlobStatus(
        digest=digest,
        size=size,
        chunk_count=chunk_count,
        published=len(await store.blobs.published(digest)),
        holders=sum(1 for complete, _ in holders.values() if complete == full),
        min_swarm=min(swarm),
        max_swarm=max(swarm),
        leases=leases,
    )
