"""The tracker's rules: every request of the service as one method over the state in the store.

State: the nodes (membership), what they hold (the peer store), blob placement (leases, metainfo,
fan-out; `tracker.placement`), seeded refs and preheat jobs, all in a `tracker.store.Store`. It is
soft: rebuilt from the nodes after the tracker restarts, or after the store starts afresh.

With the in-memory store (the default) nothing here suspends, so every call runs to completion
before the next begins, as it did when the state lived in this class. With a shared store,
calls of this replica and of the others interleave, and the store's atomic steps keep what must
hold cluster-wide (see `tracker.store`). Time comes from `clock`, so tests can drive expiry.

Each method gathers the notifications its changes cause and sends them (to every replica's hub)
before it returns, so a node that watches a blob hears of a change before the call that made it
is answered.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tracker import limits, rendezvous
from tracker.errors import FailedPrecondition, InvalidArgument, NodeUnknown, NoTargets
from tracker.handout import Candidate, rank
from tracker.hub import Gone, Hub, Inbox, Watcher
from tracker.nodes import Load, Node
from tracker.peerstore import indices_of, mask_of
from tracker.placement import ChunkView, Directive, Notices, Placement
from tracker.policy import Policy
from tracker.store import Announced, Claim, Store
from tracker.store.memory import MemoryStore
from tracker.tasks import Order, PreheatJob, PreheatOrder, TaskState

log = logging.getLogger(__name__)

__all__ = [
    "ChunkView",
    "Cluster",
    "Directive",
    "Holding",
    "Load",
    "Node",
    "Policy",
    "Session",
]

MAX_NODES = 50_000
MAX_BLOBS_PER_NODE = 200_000
MAX_REFS_PER_NODE = 100_000
MAX_WATCHES_PER_NODE = 4096  # Watch streams one node holds open on one replica
PRUNE_SECONDS = 30.0
# Announce calls a replica runs at once; the others wait their turn. Each takes one of the
# store's connections at a time: after Redis restarted, thousands of nodes announce their whole
# inventory at once, and heartbeats and Locates must still find a free connection.
ANNOUNCES_AT_ONCE = 16

R = TypeVar("R")


@dataclass(frozen=True)
class Holding:
    """One blob of a node's announcement."""

    digest: str
    size: int
    chunk_count: int
    complete: tuple[int, ...] = ()
    partial: tuple[int, ...] = ()


@dataclass(frozen=True)
class Session:
    heartbeat_interval: float
    node_ttl: float
    lease_ttl: float
    tracker_instance: str


def notifying(
    method: Callable[..., Awaitable[R]],
) -> Callable[..., Awaitable[R]]:
    """Send the notifications a call gathered once it is done, whether it succeeded or not (a
    failed call may have changed the state before it failed)."""

    @functools.wraps(method)
    async def wrapper(self: Cluster, *args: Any, **kwargs: Any) -> R:
        try:
            return await method(self, *args, **kwargs)
        finally:
            events = self.notices.take()
            if events:
                await self.store.notify(events)

    return wrapper


class Cluster:
    def __init__(
        self,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        store: Store | None = None,
    ) -> None:
        self.policy = policy or Policy()
        self.clock = clock
        self.rng = rng or random.Random()
        self.store: Store = store or MemoryStore(self.rng, self.policy.lease_ttl)
        self.hub = Hub()
        self.notices = Notices()
        self.placement = Placement(self.policy, clock, self.rng, self.store, self.notices)
        self.instance = uuid.uuid4().hex[:12]  # this replica
        self.started_at = clock()
        self._last_prune = self.started_at
        self._watch_ids = itertools.count(1)
        self._announcing = asyncio.Semaphore(ANNOUNCES_AT_ONCE)

    async def start(self) -> None:
        await self.store.start(self.hub)

    async def close(self) -> None:
        """End every Watch and Tasks stream of this replica (the server is stopping)."""
        self.hub.close_all()
        await self.store.close()

    # ---- membership ----

    @notifying
    async def join(
        self, node_id: str, registry: str, peer: str, zone: str, instance: str
    ) -> Session:
        limits.node_id(node_id)
        limits.address(registry, "registry address")
        limits.address(peer, "peer address")
        limits.zone(zone)
        now = self.clock()
        fresh = Node(node_id, instance[:64], registry, peer, zone, joined_at=now, last_seen=now)
        node, old = await self.store.members.join(fresh, MAX_NODES)
        restarted = old is None or old.instance != node.instance
        # Joining again replaces the inventory: the node announces it anew.
        lost = await self.store.peers.remove_node(node_id)
        await self.store.peers.add_node(node_id, zone)
        if old is not None:
            await self._gone(old, lost, reason=None, keep_leases=not restarted)
        await self.store.tasks.clear(node_id)
        for job in await self.store.tasks.unfinished_for(node_id):
            if job.targets[node_id].state is TaskState.PENDING or restarted:
                await self.store.tasks.pending(node_id, job.id)
                await self.placement.order(node_id, PreheatOrder(job.id, job.image))
        return Session(
            self.policy.heartbeat_interval,
            self.policy.node_ttl,
            self.policy.lease_ttl,
            await self.store.cluster_id(),
        )

    @notifying
    async def heartbeat(self, node_id: str, load: Load) -> None:
        heard = await self.store.members.heartbeat(node_id, self.clock(), load)
        if heard is None:
            raise _unknown(node_id)
        if heard:
            log.info("node heard again: a source once more", extra={"node": node_id})
            await self.placement.heard(node_id)

    @notifying
    async def leave(self, node_id: str) -> None:
        node = await self.store.members.remove(node_id)
        if node is None:
            raise _unknown(node_id)
        await self._gone(node, await self.store.peers.remove_node(node_id), reason="left")

    async def node(self, node_id: str) -> Node:
        node = await self.store.members.get(node_id)
        if node is None:
            raise _unknown(node_id)
        return node

    async def _gone(
        self, node: Node, lost: dict[str, int], reason: str | None, keep_leases: bool = False
    ) -> None:
        """Undo the part of a node that left, expired (`reason`) or joined again (None); it is
        no member any more, or a member anew, and `lost` is what it held whole."""
        await self.store.refs.drop_node(node.id)
        self.notices.add(Gone(node.id, node.epoch))
        if reason is not None:
            await self.store.tasks.node_gone(node.id, f"node {reason}", self.clock())
        await self.placement.node_gone(node.id, lost, keep_leases)

    # ---- inventory ----

    async def announce(
        self, node_id: str, holdings: Sequence[Holding], refs: Sequence[tuple[str, str]]
    ) -> list[str]:
        async with self._announcing:
            return await self._announce(node_id, holdings, refs)

    @notifying
    async def _announce(
        self, node_id: str, holdings: Sequence[Holding], refs: Sequence[tuple[str, str]]
    ) -> list[str]:
        """The holdings as one step on the store (`Store.announce`), then what follows from
        what they changed; the refs after them. A holding of a blob known with another shape
        stays out (its digest is returned); the rest counts."""
        limits.count(len(holdings), limits.MAX_BLOBS_PER_CALL, "blobs")
        limits.count(len(refs), limits.MAX_REFS_PER_CALL, "refs")
        claims = [self._claim(h) for h in holdings if h.complete or h.partial]
        for ref, digest in refs:
            limits.ref(ref)
            limits.digest(digest)
        if refs and await self.store.refs.count(node_id) + len(refs) > MAX_REFS_PER_NODE:
            raise InvalidArgument(f"a node may announce at most {MAX_REFS_PER_NODE} refs")
        announced = await self._announce_claims(node_id, claims)
        retry, refused = [], []
        for digest in announced.conflicts:
            claim = next(c for c in claims if c.digest == digest)
            try:
                # A shape nobody holds or leases yields to the one this node holds.
                await self.placement.blob(digest, claim.size, claim.chunk_count)
                retry.append(claim)
            except FailedPrecondition as e:
                # Others hold the blob with another shape: this holding stays out, the rest of
                # the node's inventory counts.
                log.warning("announced blob refused", extra={"node": node_id, "error": e.message})
                refused.append(digest)
        if retry:
            refused += list((await self._announce_claims(node_id, retry)).conflicts)
        for ref, digest in refs:
            await self.store.refs.add(node_id, ref, digest)
        return refused

    async def _announce_claims(self, node_id: str, claims: Sequence[Claim]) -> Announced:
        announced = await self.store.announce(
            node_id, claims, self.clock(), self.policy.fanout, MAX_BLOBS_PER_NODE
        )
        if not announced.member:
            raise _unknown(node_id)
        if not announced.fit:
            raise InvalidArgument(f"a node may announce at most {MAX_BLOBS_PER_NODE} blobs")
        for gain in announced.gains:
            await self.placement.gained(gain)
        return announced

    def _claim(self, holding: Holding) -> Claim:
        limits.blob(holding.digest, holding.size, holding.chunk_count)
        complete = limits.chunk_indices(holding.complete, holding.chunk_count)
        partial = limits.chunk_indices(holding.partial, holding.chunk_count)
        return Claim(
            holding.digest,
            holding.size,
            holding.chunk_count,
            mask_of(complete),
            mask_of(partial - complete),
        )

    @notifying
    async def withdraw(
        self,
        node_id: str,
        digests: Sequence[str],
        refs: Sequence[tuple[str, str]],
        corrupt: bool = False,
        chunks: Sequence[int] = (),
    ) -> None:
        node = await self.node(node_id)
        limits.count(len(digests), limits.MAX_BLOBS_PER_CALL, "digests")
        limits.count(len(refs), limits.MAX_REFS_PER_CALL, "refs")
        for digest in digests:
            limits.digest(digest)
        if chunks:
            await self._withdraw_chunks(node.id, digests, chunks)
            digests = []  # the blob itself is still held
        leases = await self.store.leases.held_by(node.id)
        for digest in digests:
            lost = await self.store.peers.drop(node.id, digest)
            if await self.store.blobs.shape(digest) is not None:
                # A pull that failed may have been handed leases it never used.
                leased = [lease.chunk for lease in leases if lease.digest == digest]
                await self.placement.release(node.id, digest, leased)
                await self.placement.gave_up(node.id, digest)
                await self.placement.lost(digest, indices_of(lost))
                if corrupt:
                    await self.placement.distrust(digest)
                await self.placement.drop_if_idle([digest])
        for ref, digest in refs:
            await self.store.refs.remove(node.id, ref, digest)

    async def _withdraw_chunks(
        self, node_id: str, digests: Sequence[str], chunks: Sequence[int]
    ) -> None:
        """Chunks of one blob the node can no longer serve (their files cannot be read): the
        others it still holds. Its holdings of the blob are set again without them, and the
        chunks it held whole are placed as lost: leased out if nobody else holds them."""
        if len(digests) != 1:
            raise InvalidArgument("chunks are withdrawn from one blob at a time")
        limits.count(len(chunks), limits.MAX_CHUNKS_PER_BLOB, "chunks")
        digest = digests[0]
        shape = await self.store.blobs.shape(digest)
        if shape is None:
            return
        gone = mask_of(limits.chunk_indices(chunks, shape[1]))
        complete, partial = await self.store.peers.masks(node_id, digest)
        if not (complete | partial) & gone:
            return
        await self.store.peers.drop(node_id, digest)
        await self.store.peers.hold(node_id, digest, complete & ~gone, partial & ~gone)
        await self.placement.lost(digest, indices_of(complete & gone))

    # ---- placement ----

    @notifying
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
    ) -> list[ChunkView]:
        node = await self.node(node_id)
        return await self.placement.locate(
            node, digest, size, chunk_count, chunks, max_leases, with_metainfo, failed
        )

    async def view(
        self, node_id: str, digest: str, size: int, chunk_count: int, chunks: Iterable[int]
    ) -> list[ChunkView]:
        node = await self.node(node_id)
        return await self.placement.view(node, digest, size, chunk_count, chunks)

    @notifying
    async def renew(
        self, node_id: str, digest: str, chunk: int, progress: int, fetched: bool = False
    ) -> float | None:
        await self.node(node_id)
        return await self.placement.renew(node_id, digest, chunk, progress, fetched)

    @notifying
    async def release(self, node_id: str, digest: str, chunk: int) -> None:
        await self.node(node_id)
        await self.placement.release(node_id, digest, [chunk])

    @notifying
    async def publish(
        self, node_id: str, digest: str, size: int, chunk_count: int, chunk: int, metainfo: bytes
    ) -> None:
        node = await self.node(node_id)
        await self.placement.publish(node, digest, size, chunk_count, chunk, metainfo)

    @notifying
    async def unconfirmed(self, node_id: str, digest: str, chunk: int) -> None:
        """The node's metainfo for the chunk was not taken: it waits for a second witness. A node
        the tracker does not know (forgotten, not joined again yet) is no source: nothing to do,
        and its publish is refused as unconfirmed, as any other."""
        limits.digest(digest)
        if await self.store.members.get(node_id) is not None:
            await self.placement.lease_unconfirmed(digest, chunk, node_id)

    @notifying
    async def watch(self, node_id: str, digest: str, size: int, chunk_count: int) -> Watcher:
        node = await self.node(node_id)
        if self.hub.watch_count(node_id) >= MAX_WATCHES_PER_NODE:
            raise InvalidArgument(f"a node may watch at most {MAX_WATCHES_PER_NODE} blobs")
        await self.placement.request(node_id, digest, size, chunk_count)
        watch_id = f"{self.instance}:{next(self._watch_ids)}"
        watcher = self.hub.add_watcher(node_id, node.epoch, digest, chunk_count, watch_id)
        # A blob of one chunk (an image's config, a small layer) takes the next free upstream
        # slot: it holds it a moment, and clients often want it before the layers are of use.
        await self.store.blobs.add_watch(digest, node_id, watcher.id, ahead=chunk_count == 1)
        return watcher

    @notifying
    async def unwatch(self, watcher: Watcher) -> None:
        self.hub.remove_watcher(watcher)
        await self.store.blobs.remove_watch(watcher.digest, watcher.node_id, watcher.id)
        await self.placement.drop_if_idle([watcher.digest])

    # ---- seeded refs ----

    async def resolve(self, ref: str, node_id: str = "") -> list[tuple[str, int, list[Node]]]:
        """Each digest announced for `ref`: how many nodes hold it, and a ranked handout."""
        limits.ref(ref)
        asking = await self.store.members.get(node_id) if node_id else None
        zone = asking.zone if asking else ""
        out = []
        for resolution in await self.store.refs.resolve(ref):
            alive = await self.store.members.many(resolution.holders)
            candidates = [Candidate(n.id, n.zone, True) for n in alive.values()]
            ranked = rank(node_id, zone, candidates, self.policy.max_peers, self.rng)
            out.append((resolution.digest, len(alive), [alive[c.node_id] for c in ranked]))
        return out

    # ---- preheat and tasks ----

    @notifying
    async def preheat(self, image: str, count: int, zone: str, timeout: float) -> PreheatJob:
        """Place `image` on `count` nodes (0: all) of `zone` (empty: any), chosen by rendezvous
        hashing so that repeating a preheat mostly hits the same nodes."""
        limits.ref(image)
        limits.zone(zone)
        members = await self.store.members.all()
        eligible = [n.id for n in members if not zone or n.zone == zone]
        if not eligible:
            raise NoTargets(f"no node matches (zone {zone!r})" if zone else "no node has joined")
        targets = rendezvous.choose(image, eligible, count or None)
        deadline = timeout if timeout > 0 else self.policy.preheat_timeout
        job = await self.store.tasks.create(image, targets, self.clock(), deadline)
        for node_id in targets:
            if not await self.placement.order(node_id, PreheatOrder(job.id, image)):
                message = "node's task queue is full"
                await self.store.tasks.report(node_id, job.id, False, message, self.clock())
        return await self.store.tasks.get(job.id)

    async def preheat_status(self, task_id: str) -> PreheatJob:
        return await self.store.tasks.get(task_id)

    async def open_inbox(self, node_id: str) -> Inbox:
        node = await self.node(node_id)
        return self.hub.open_inbox(node_id, node.epoch)

    def close_inbox(self, inbox: Inbox) -> None:
        self.hub.close_inbox(inbox)

    async def next_order(self, inbox: Inbox) -> Order | None:
        """The node's next work order, once there is one; None once the stream is to end."""
        while not inbox.closed:
            inbox.clear()
            order = await self.store.tasks.pop(inbox.node_id)
            if order is not None:
                if isinstance(order, PreheatOrder):
                    await self.store.tasks.delivered(inbox.node_id, order.task_id)
                return order
            await inbox.wait()
        return None

    async def report(self, node_id: str, task_id: str, ok: bool, message: str) -> None:
        await self.node(node_id)
        if task_id.startswith("republish-"):
            return
        await self.store.tasks.report(node_id, task_id, ok, message, self.clock())

    # ---- life cycle ----

    @notifying
    async def sweep(self) -> None:
        """Forget silent nodes, lapse stalled leases, time out jobs; run it every second or so
        (with replicas: in one of them at a time, but running it in several does no harm)."""
        now = self.clock()
        for node in await self.store.members.expire(now - self.policy.node_ttl):
            log.warning("node expired: no heartbeat", extra={"node": node.id})
            lost = await self.store.peers.remove_node(node.id)
            await self._gone(node, lost, reason="expired: no heartbeat")
        if self.policy.silent_after > 0:
            for node_id in await self.store.members.silence(now - self.policy.silent_after):
                log.warning(
                    "node missed heartbeats: no chunk's source until heard again",
                    extra={"node": node_id},
                )
                await self.placement.silence(node_id)
        await self.placement.tick(always=True)
        await self.store.tasks.expire(now)
        if now - self._last_prune > PRUNE_SECONDS:
            self._last_prune = now
            await self.placement.prune(now)


def _unknown(node_id: str) -> NodeUnknown:
    return NodeUnknown(f"unknown node {node_id[:80]!r}: join first")
