"""The tracker client that nodes (and the `status` and `preheat` commands) use.

Every call has a deadline and fails fast with a `tracker.errors.TrackerError` (`TrackerUnavailable`
when the tracker cannot be reached), never hangs, never leaks a gRPC status. The channel
reconnects by itself with a short backoff; joining again after a tracker restart is the caller's
move (`node.membership` does it), since only the node knows its inventory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from distributed_images import pem
from distributed_images.settings import as_given
from tracker import address, auth, credentials, errors, limits, targets
from tracker.attachment import Attachment
from tracker.cluster import Session
from tracker.nodes import Load
from tracker.placement import Directive
from tracker.tasks import CheckOrder, Order, PreheatOrder, RepublishOrder, TaskState
from tracker.v1 import tracker_pb2 as pb
from tracker.v1 import tracker_pb2_grpc

__all__ = [
    "CheckOrder",
    "ChunkPlacement",
    "Directive",
    "HeldBlob",
    "Inventory",
    "Load",
    "NodeAddress",
    "Order",
    "Peer",
    "Placement",
    "PreheatOrder",
    "RepublishOrder",
    "SeededRef",
    "Session",
    "TaskState",
    "TrackerClient",
]

log = logging.getLogger(__name__)

ANNOUNCE_BATCH = 1000
LOGGED_DIGESTS = 10  # of the blobs an announcement left out, the log names so many
RETIRE_GRACE = 60.0  # seconds calls on a channel left behind get to end
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", limits.MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", limits.MAX_MESSAGE_BYTES),
]


@dataclass(frozen=True)
class HeldBlob:
    digest: str
    size: int
    chunk_count: int
    chunks: tuple[int, ...]  # indices of complete chunks held
    partial: tuple[int, ...] = ()  # indices of chunks being downloaded


@dataclass(frozen=True)
class SeededRef:
    ref: str
    digest: str


@dataclass(frozen=True)
class Inventory:
    blobs: tuple[HeldBlob, ...]
    refs: tuple[SeededRef, ...] = ()


@dataclass(frozen=True)
class NodeAddress:
    node_id: str
    registry: str
    peer: str
    zone: str = ""


@dataclass(frozen=True)
class Peer:
    node_id: str
    registry: str
    peer: str
    zone: str


@dataclass(frozen=True)
class ChunkPlacement:
    index: int
    directive: Directive
    metainfo: bytes | None
    peers: tuple[Peer, ...]  # ranked: complete before partial, same zone first
    complete: frozenset[str]  # node ids among `peers` that hold the chunk complete
    lease_holder: str | None
    lease_seconds: float


@dataclass(frozen=True)
class Placement:
    digest: str
    chunk_count: int
    chunks: tuple[ChunkPlacement, ...]


@dataclass(frozen=True)
class Resolution:
    digest: str
    holders: int
    nodes: tuple[Peer, ...]
    size: int = 0  # the manifest's size as its holders announced it; 0: unknown


@dataclass(frozen=True)
class PreheatTicket:
    task_id: str
    targets: tuple[str, ...]


@dataclass(frozen=True)
class TargetStatus:
    node_id: str
    state: TaskState
    message: str


@dataclass(frozen=True)
class PreheatProgress:
    task_id: str
    image: str
    targets: tuple[TargetStatus, ...]
    finished: bool


@dataclass(frozen=True)
class NodeStatus:
    id: str
    registry: str
    peer: str
    zone: str
    blobs: int
    chunks: int
    partial_chunks: int
    leases: int
    seconds_since_heartbeat: float
    seconds_since_join: float


@dataclass(frozen=True)
class BlobStatus:
    digest: str
    size: int
    chunk_count: int
    published: int
    holders: int
    min_swarm: int
    max_swarm: int
    leases: int


@dataclass(frozen=True)
class ReplicaStatus:
    instance: str
    address: str
    uptime_seconds: float


@dataclass(frozen=True)
class ClusterStatus:
    tracker_instance: str
    uptime_seconds: float
    nodes: tuple[NodeStatus, ...]
    blobs: tuple[BlobStatus, ...]
    blobs_truncated: bool
    blob_count: int
    chunk_count: int
    lease_count: int
    preheat_tasks: int
    replicas: tuple[ReplicaStatus, ...] = ()  # live tracker replicas
    replica: str = ""  # the instance of the one that answered


_DIRECTIVES = {
    pb.DIRECTIVE_FETCH: Directive.FETCH,
    pb.DIRECTIVE_WAIT: Directive.WAIT,
    pb.DIRECTIVE_SWARM: Directive.SWARM,
}
_TASK_STATES = {
    pb.TASK_STATE_PENDING: TaskState.PENDING,
    pb.TASK_STATE_DELIVERED: TaskState.DELIVERED,
    pb.TASK_STATE_DONE: TaskState.DONE,
    pb.TASK_STATE_FAILED: TaskState.FAILED,
}


@dataclass
class Connection:
    """How a command reaches the tracker: its flags `--tracker`, `--credential-file`, `--tls`,
    `--tls-ca`."""

    tracker: str | None = field(
        default=None,
        metadata={
            "parse": as_given(targets.parse),
            "help": "tracker address (required)",
            "metavar": "HOST:PORT",
        },
    )
    credential_file: Path | None = field(
        default=None,
        metadata={
            "help": "an operator credential (distributed-images credential --operator)",
            "metavar": "FILE",
        },
    )
    tls: bool = field(default=False, metadata={"help": "talk TLS (system trust roots)"})
    tls_ca: Path | None = field(
        default=None, metadata={"help": "talk TLS, trusting this PEM CA", "metavar": "FILE"}
    )
    timeout: float = field(
        default=5.0,
        metadata={"above": 0, "help": "seconds to wait for each answer", "metavar": "S"},
    )

    def client(self) -> TrackerClient:
        if not self.tracker:
            raise errors.InvalidArgument("--tracker HOST:PORT is required")
        if self.tls_ca is not None:
            try:
                pem.check_ca_file(self.tls_ca)
            except ValueError as e:
                raise errors.InvalidArgument(f"--tls-ca: {e}") from None
        credential = None
        if self.credential_file is not None:
            try:
                credential = credentials.read_credential(self.credential_file)
            except credentials.CredentialError as e:
                raise errors.InvalidArgument(str(e)) from None
        return TrackerClient(
            self.tracker,
            credential=credential,
            tls=self.tls,
            tls_ca=self.tls_ca,
            timeout=self.timeout,
        )


def _error(e: grpc.aio.AioRpcError) -> errors.TrackerError:
    trailing = e.trailing_metadata() or ()
    kind = next((str(v) for k, v in trailing if k == errors.ERROR_KEY), None)
    return errors.from_status(e.code(), e.details() or "", kind)


def _placement(message: pb.Placement) -> Placement:
    peers = [Peer(p.node_id, p.registry, p.peer, p.zone) for p in message.peers]
    chunks = tuple(
        ChunkPlacement(
            index=c.index,
            directive=_DIRECTIVES.get(c.directive, Directive.WAIT),
            metainfo=c.metainfo or None,
            peers=tuple(peers[i] for i in c.peers if i < len(peers)),
            complete=frozenset(peers[i].node_id for i in c.complete if i < len(peers)),
            lease_holder=c.lease_holder or None,
            lease_seconds=c.lease_seconds,
        )
        for c in message.chunks
    )
    return Placement(message.digest, message.chunk_count, chunks)


_MOVE = object()  # what `_Stream._next` gives when the stream is to be opened again elsewhere


class _Stream:
    """A server stream (Watch, Tasks) on the replica talked to now, carried over to the next when
    its own goes away, or when the client leaves that replica because a call timed out there (a
    replica that hangs, or whose host is gone, breaks no stream: it would wait for keepalive).
    `start` makes the call on a stub (`resume`: the stream was open on another replica before);
    `confirm` waits for the replica to say the stream is open (False: it will not be)."""

    def __init__(
        self,
        client: TrackerClient,
        start: Callable[[Any, bool], Any],
        confirm: Callable[[Any], Awaitable[bool]],
    ) -> None:
        self._client = client
        self._start = start
        self._confirm = confirm
        self._call: Any = None
        self._generation = 0
        self._opened_at = 0.0
        self._leaving = False  # the client left this stream's replica: its call was cancelled

    async def open(self, resume: bool = False) -> None:
        subscribed = await self._client._subscribe(self._start, self._confirm, resume)
        self._call, self._generation = subscribed
        self._leaving = False
        self._opened_at = time.monotonic()
        self._client._streams.add(self)
        self._client.attachment.opened(self, self._generation)

    def leave(self, generation: int) -> None:
        """The client left the replica of `generation`: a stream open there ends its call, and
        `messages` opens it again where the client is now."""
        if self._generation == generation and self._call is not None:
            self._leaving = True
            self._call.cancel()

    async def messages(self) -> AsyncIterator[Any]:
        """The stream's messages until it ends; raises once no replica takes it, or when it
        broke on every replica in turn, each soon after it was opened there."""
        moves = 0
        while True:
            message = await self._next()
            if message is grpc.aio.EOF:
                return
            if message is not _MOVE:
                yield message
                continue
            self._call.cancel()
            self._client._fail_over(self._generation)  # unless the client moved already
            lasted = time.monotonic() - self._opened_at > self._client.timeout
            moves = 1 if lasted else moves + 1
            if moves > self._client.replicas:
                raise errors.TrackerUnavailable("no tracker replica keeps the stream open")
            await self.open(resume=True)

    async def _next(self) -> Any:
        """The next message; EOF once the stream ended; _MOVE when it is to be opened again
        where the client is now (its replica failed it, or the client left that replica)."""
        if self._generation != self._client._generation:
            return _MOVE
        try:
            message = await self._call.read()
        except asyncio.CancelledError:
            # `leave` cancelled the call, or this task is being cancelled: only the first moves.
            task = asyncio.current_task()
            if not self._leaving or (task is not None and task.cancelling()):
                raise
            return _MOVE
        except grpc.aio.AioRpcError as e:
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                raise _error(e) from None
            return _MOVE
        return _MOVE if message is grpc.aio.EOF and self._leaving else message

    def cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()
        self._client._streams.discard(self)
        self._client.attachment.closed(self)


async def _subscribed(call: Any) -> bool:
    """A Watch call is open once its first event, `subscribed`, came."""
    return bool(await call.read() is not grpc.aio.EOF)


async def _headers_came(call: Any) -> bool:
    """A Tasks call is open once the replica sent its headers, after opening the node's inbox."""
    await call.initial_metadata()
    if call.done():
        await call.read()  # raises the call's failure, if it failed
    return True


def _order(task: pb.Task) -> Order | None:
    """The order a task carries; None for a kind this node does not know (a newer tracker's)."""
    kind = task.WhichOneof("kind")
    if kind == "preheat":
        return PreheatOrder(task.task_id, task.preheat.image)
    if kind not in ("republish", "check"):
        return None
    c = getattr(task, kind)
    order = RepublishOrder if kind == "republish" else CheckOrder
    return order(task.task_id, c.digest, c.size, c.chunk_count, tuple(c.chunks))


class TrackerClient:
    """A channel to one tracker replica at a time, among those `address` names (see
    `tracker.targets`). A call the replica cannot take (UNAVAILABLE: it is gone, stopping, or
    cut off from its store) is made again on the next replica, each tried once; a call that
    timed out is not made again, but the next call goes to the next replica. A Watch stream that
    breaks is opened again on the next replica and picks up where it was. Create the client
    anywhere; the channel opens on the first call."""

    def __init__(
        self,
        address: str,
        *,
        credential: str | None = None,
        tls: bool = False,
        tls_ca: Path | None = None,
        timeout: float = 5.0,
    ) -> None:
        targets.parse(address)
        self.address = address
        self.timeout = timeout
        self._metadata = auth.bearer(credential) if credential else ()
        self._credentials = auth.channel_credentials(tls_ca) if tls or tls_ca else None
        self._targets: list[targets.Target] = []
        self._current = 0
        self._generation = 0  # counts the moves to another replica
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._retiring: set[asyncio.Task[None]] = set()
        self.attachment = Attachment()  # set its `report` to hear how long each move took
        self._streams: set[_Stream] = set()  # open, to carry over when the client moves
        self._resolved = 0

    @property
    def target(self) -> str:
        """The replica talked to now (or next)."""
        return self._targets[self._current].address if self._targets else self.address

    async def _tracker(self) -> tuple[Any, int]:
        """The stub of the current replica, and the generation to name it by when it fails."""
        if self._stub is None:
            if not self._targets:
                self._targets = await targets.resolve(self.address)
                self._resolved = len(self._targets)
                self._current = 0
            target = self._targets[self._current]
            options: list[tuple[str, Any]] = list(CHANNEL_OPTIONS)
            if self._credentials is not None:
                if target.name != address.split(target.address)[0]:
                    options.append(("grpc.ssl_target_name_override", target.name))
                self._channel = grpc.aio.secure_channel(
                    target.address, self._credentials, options=options
                )
            else:
                self._channel = grpc.aio.insecure_channel(target.address, options=options)
            self._stub = tracker_pb2_grpc.TrackerStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub, self._generation

    def _fail_over(self, generation: int, hung: bool = False) -> None:
        """Leave the replica of `generation` for the next (unless a call that failed at the same
        time did already); after the last, the names are looked up again. The old channel is
        closed once the calls still on it ended, or after a grace period. A replica that `hung`
        (a call timed out there) breaks no stream: the streams open there move now. One that
        answered, or whose connection broke, ends its streams itself when it fails them."""
        if generation != self._generation:
            return
        self._generation += 1
        self.attachment.moved(self._generation)
        if hung:
            for stream in list(self._streams):
                stream.leave(generation)
        if self._channel is not None:
            task = asyncio.create_task(self._channel.close(grace=RETIRE_GRACE))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        self._channel = self._stub = None
        self._current += 1
        if self._current >= len(self._targets):
            self._targets = []
            self._current = 0

    def _replicas(self) -> int:
        """How many replicas to try in turn now: those left before the names are looked up
        again (`replicas` counts them all)."""
        return max(1, len(self._targets))

    @property
    def replicas(self) -> int:
        """How many replicas the names gave when last looked up (1 before the first call)."""
        return max(1, self._resolved)

    async def close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()
        for task in list(self._retiring):
            task.cancel()

    async def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        tracker, generation = await self._tracker()
        attempts = self._replicas()
        for attempt in range(attempts):
            try:
                response = await getattr(tracker, method)(
                    request, timeout=timeout or self.timeout, metadata=self._metadata
                )
            except grpc.aio.AioRpcError as e:
                code = e.code()
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    self._fail_over(generation, hung=code is grpc.StatusCode.DEADLINE_EXCEEDED)
                if code is not grpc.StatusCode.UNAVAILABLE or attempt + 1 == attempts:
                    raise _error(e) from None
                tracker, generation = await self._tracker()
            else:
                self.attachment.answered(generation)
                return response
        raise AssertionError("unreachable")

    # ---- membership ----

    async def join(self, node: NodeAddress, instance: str) -> Session:
        address = pb.NodeAddress(
            node_id=node.node_id, registry=node.registry, peer=node.peer, zone=node.zone
        )
        r = await self._call("Join", pb.JoinRequest(node=address, instance=instance))
        return Session(
            r.heartbeat_interval_seconds,
            r.node_ttl_seconds,
            r.lease_ttl_seconds,
            r.tracker_instance,
        )

    async def heartbeat(self, node_id: str, load: Load | None = None) -> None:
        load = load or Load()
        message = pb.Load(
            uploads=load.uploads,
            downloads=load.downloads,
            upload_bytes_per_second=load.upload_bytes_per_second,
            download_bytes_per_second=load.download_bytes_per_second,
            store_bytes=load.store_bytes,
        )
        await self._call("Heartbeat", pb.HeartbeatRequest(node_id=node_id, load=message))

    async def leave(self, node_id: str) -> None:
        await self._call("Leave", pb.LeaveRequest(node_id=node_id))

    # ---- inventory ----

    async def announce(
        self, node_id: str, blobs: Sequence[HeldBlob], refs: Sequence[SeededRef] = ()
    ) -> list[str]:
        """Add to the node's inventory, in batches that stay well under the message limit. The
        digests the tracker left out (the cluster holds them in another shape) are returned, and
        logged: this node is no source of them."""
        refused: list[str] = []
        for start in range(0, max(len(blobs), len(refs), 1), ANNOUNCE_BATCH):
            batch = blobs[start : start + ANNOUNCE_BATCH]
            request = pb.AnnounceRequest(
                node_id=node_id,
                blobs=[
                    pb.HeldBlob(
                        digest=b.digest,
                        size=b.size,
                        chunk_count=b.chunk_count,
                        complete=b.chunks,
                        partial=b.partial,
                    )
                    for b in batch
                ],
                refs=[
                    pb.SeededRef(ref=r.ref, digest=r.digest)
                    for r in refs[start : start + ANNOUNCE_BATCH]
                ],
            )
            refused += (await self._call("Announce", request)).refused
        if refused:
            log.warning(
                "the tracker left blobs out of this node's inventory: the cluster knows them "
                "with another size",
                extra={"digests": refused[:LOGGED_DIGESTS], "count": len(refused)},
            )
        return refused

    async def withdraw(
        self,
        node_id: str,
        digests: Sequence[str],
        refs: Sequence[SeededRef] = (),
        corrupt: bool = False,
        chunks: Sequence[int] = (),
    ) -> None:
        """The node no longer holds these blobs; `corrupt`: they failed their digest check;
        `chunks`: only these chunks of the one blob, the rest still held."""
        refs_message = [pb.SeededRef(ref=r.ref, digest=r.digest) for r in refs]
        request = pb.WithdrawRequest(
            node_id=node_id, digests=digests, refs=refs_message, corrupt=corrupt, chunks=chunks
        )
        await self._call("Withdraw", request)

    # ---- placement ----

    async def locate(
        self,
        node_id: str,
        digest: str,
        size: int,
        chunk_count: int,
        chunks: Iterable[int] = (),
        max_leases: int = 0,
        with_metainfo: bool = True,
        failed: Iterable[int] = (),
    ) -> Placement:
        """Where to get these chunks. `failed`: chunks whose pieces failed their hash from the
        peers given; the tracker asks their holders to check their copies."""
        request = pb.LocateRequest(
            node_id=node_id,
            digest=digest,
            size=size,
            chunk_count=chunk_count,
            chunks=list(chunks),
            max_leases=max_leases,
            omit_metainfo=not with_metainfo,
            failed_chunks=list(failed),
        )
        response = await self._call("Locate", request)
        return _placement(response.placement)

    async def renew_lease(
        self, node_id: str, digest: str, chunk: int, progress: int, fetched: bool = False
    ) -> bool:
        """True while the node still holds the lease (extended when `progress` grew). With
        `fetched`, the whole range is in: the upstream slot goes to the next cold chunk."""
        request = pb.RenewLeaseRequest(
            node_id=node_id, digest=digest, chunk=chunk, progress_bytes=progress, fetched=fetched
        )
        response = await self._call("RenewLease", request)
        return bool(response.held)

    async def release_lease(self, node_id: str, digest: str, chunk: int, reason: str = "") -> None:
        request = pb.ReleaseLeaseRequest(node_id=node_id, digest=digest, chunk=chunk, reason=reason)
        await self._call("ReleaseLease", request)

    async def publish(
        self, node_id: str, digest: str, size: int, chunk_count: int, chunk: int, metainfo: bytes
    ) -> None:
        request = pb.PublishRequest(
            node_id=node_id,
            digest=digest,
            size=size,
            chunk_count=chunk_count,
            chunk=chunk,
            metainfo=metainfo,
        )
        await self._call("Publish", request)

    @contextlib.asynccontextmanager
    async def watch(
        self, node_id: str, digest: str, size: int, chunk_count: int
    ) -> AsyncIterator[AsyncIterator[Placement]]:
        """Subscribe to a blob's changes; on entry the subscription is active, so a Locate made
        afterwards misses nothing. Iterate the yielded events until you leave the block. When
        the replica goes away, the stream moves to another, whose first event shows every
        chunk; the iteration raises only once no replica takes it."""
        request = pb.WatchRequest(
            node_id=node_id, digest=digest, size=size, chunk_count=chunk_count
        )

        def start(tracker: Any, resume: bool) -> Any:
            sent = pb.WatchRequest()
            sent.CopyFrom(request)
            sent.resume = resume
            return tracker.Watch(sent, metadata=self._metadata)

        stream = _Stream(self, start, _subscribed)
        try:
            await stream.open()
            yield (_placement(event.placement) async for event in stream.messages())
        finally:
            stream.cancel()

    async def _subscribe(
        self,
        start: Callable[[Any, bool], Any],
        confirm: Callable[[Any], Awaitable[bool]],
        resume: bool,
    ) -> tuple[Any, int]:
        """A stream call the replica confirmed open, on the first replica that takes it."""
        tracker, generation = await self._tracker()
        attempts = self._replicas()
        for attempt in range(attempts):
            call = start(tracker, resume)
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
                # that comes as the confirmation does, and the caller would never stop.
                async with asyncio.timeout(self.timeout):
                    confirmed = await confirm(call)
                if confirmed:
                    return call, generation
            except grpc.aio.AioRpcError as e:
                if e.code() is not grpc.StatusCode.UNAVAILABLE:
                    call.cancel()
                    raise _error(e) from None
                hung = False
            except TimeoutError:
                hung = True
            else:
                hung = False
            call.cancel()
            self._fail_over(generation, hung)
            if attempt + 1 == attempts:
                raise errors.TrackerUnavailable("no tracker replica opens the stream")
            tracker, generation = await self._tracker()
        raise AssertionError("unreachable")

    # ---- seeded references ----

    async def resolve(self, ref: str, node_id: str = "") -> list[Resolution]:
        response = await self._call("Resolve", pb.ResolveRequest(ref=ref, node_id=node_id))
        return [
            Resolution(
                r.digest,
                r.holders,
                tuple(Peer(p.node_id, p.registry, p.peer, p.zone) for p in r.nodes),
                r.size,
            )
            for r in response.resolutions
        ]

    # ---- preheat and tasks ----

    async def preheat(
        self, image: str, count: int = 0, zone: str = "", timeout: float = 0.0
    ) -> PreheatTicket:
        request = pb.PreheatRequest(image=image, count=count, zone=zone, timeout_seconds=timeout)
        response = await self._call("Preheat", request)
        return PreheatTicket(response.task_id, tuple(response.targets))

    async def preheat_status(self, task_id: str) -> PreheatProgress:
        r = await self._call("PreheatStatus", pb.PreheatStatusRequest(task_id=task_id))
        targets = tuple(
            TargetStatus(t.node_id, _TASK_STATES.get(t.state, TaskState.PENDING), t.message)
            for t in r.targets
        )
        return PreheatProgress(r.task_id, r.image, targets, r.finished)

    async def tasks(self, node_id: str) -> AsyncIterator[Order]:
        """The node's work orders as the tracker sends them; ends when the tracker ends the
        stream (the node joined again). When the replica goes away the stream moves to
        another; it raises TrackerUnavailable once no replica takes it."""
        request = pb.TasksRequest(node_id=node_id)
        stream = _Stream(
            self, lambda tracker, _: tracker.Tasks(request, metadata=self._metadata), _headers_came
        )
        try:
            await stream.open()
            async for task in stream.messages():
                if (order := _order(task)) is not None:
                    yield order
        finally:
            stream.cancel()

    async def report_task(self, node_id: str, task_id: str, ok: bool, message: str = "") -> None:
        request = pb.ReportTaskRequest(node_id=node_id, task_id=task_id, ok=ok, message=message)
        await self._call("ReportTask", request)

    # ---- status ----

    async def status(self, include_blobs: bool = False, max_blobs: int = 0) -> ClusterStatus:
        request = pb.StatusRequest(include_blobs=include_blobs, max_blobs=max_blobs)
        r = await self._call("Status", request)
        nodes = tuple(
            NodeStatus(
                n.node_id,
                n.registry,
                n.peer,
                n.zone,
                n.blobs,
                n.chunks,
                n.partial_chunks,
                n.leases,
                n.seconds_since_heartbeat,
                n.seconds_since_join,
            )
            for n in r.nodes
        )
        blobs = tuple(
            BlobStatus(
                b.digest,
                b.size,
                b.chunk_count,
                b.published,
                b.holders,
                b.min_swarm,
                b.max_swarm,
                b.leases,
            )
            for b in r.blobs
        )
        return ClusterStatus(
            r.tracker_instance,
            r.uptime_seconds,
            nodes,
            blobs,
            r.blobs_truncated,
            r.blob_count,
            r.chunk_count,
            r.lease_count,
            r.preheat_tasks,
            tuple(ReplicaStatus(x.instance, x.address, x.uptime_seconds) for x in r.replicas),
            r.replica,
        )
