"""The tracker's soft state, and every rule that changes it.

State: the nodes (membership), what they hold (the peer store), blob placement (leases, metainfo,
fan-out; `tracker.placement`), seeded refs and preheat jobs. All of it is rebuilt from the nodes
after a restart.

Invariant: the cluster is owned by one event loop and no method awaits, so every call runs to
completion before the next begins. That is what makes "at most one lease holder per chunk" hold
under any number of concurrent RPCs. Time comes from `clock`, so tests can drive expiry by hand.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from tracker import limits, rendezvous
from tracker.errors import FailedPrecondition, InvalidArgument, NodeUnknown, NoTargets
from tracker.handout import Candidate, rank
from tracker.leases import LeaseTable
from tracker.mailbox import Mailbox, Watcher
from tracker.nodes import Load, Node
from tracker.peerstore import IndexedPeerStore, PeerStore, indices_of, mask_of
from tracker.placement import Blob, ChunkView, Directive, Placement
from tracker.policy import Policy
from tracker.refs import RefIndex
from tracker.tasks import Order, PreheatJob, PreheatOrder, TaskBoard, TaskState

log = logging.getLogger(__name__)

__all__ = [
    "Blob",
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
PRUNE_SECONDS = 30.0


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


class Cluster:
    def __init__(
        self,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        store: PeerStore | None = None,
    ) -> None:
        self.policy = policy or Policy()
        self.clock = clock
        self.rng = rng or random.Random()
        self.store: PeerStore = store or IndexedPeerStore(self.rng)
        self.refs = RefIndex()
        self.board = TaskBoard()
        self.nodes: dict[str, Node] = {}
        self.placement = Placement(
            self.policy, clock, self.rng, self.store, self.nodes, self.board.next_id
        )
        self.instance = uuid.uuid4().hex[:12]
        self.started_at = clock()
        self._last_prune = self.started_at

    @property
    def blobs(self) -> dict[str, Blob]:
        return self.placement.blobs

    @property
    def leases(self) -> LeaseTable:
        return self.placement.leases

    # ---- membership ----

    def join(self, node_id: str, registry: str, peer: str, zone: str, instance: str) -> Session:
        limits.node_id(node_id)
        limits.address(registry, "registry address")
        limits.address(peer, "peer address")
        limits.zone(zone)
        now = self.clock()
        old = self.nodes.get(node_id)
        if old is None and len(self.nodes) >= MAX_NODES:
            raise FailedPrecondition(f"the cluster is full ({MAX_NODES} nodes)")
        restarted = old is None or old.instance != instance
        if old is not None:
            self._forget(old, reason=None, keep_leases=not restarted)
        node = Node(node_id, instance[:64], registry, peer, zone, joined_at=now, last_seen=now)
        self.nodes[node_id] = node
        self.store.add_node(node_id, zone)
        for job in self.board.unfinished_for(node_id):
            target = job.targets[node_id]
            if target.state is TaskState.PENDING or restarted:
                target.state = TaskState.PENDING
                node.mailbox.put(PreheatOrder(job.id, job.image))
        return Session(
            self.policy.heartbeat_interval,
            self.policy.node_ttl,
            self.policy.lease_ttl,
            self.instance,
        )

    def heartbeat(self, node_id: str, load: Load) -> None:
        node = self.node(node_id)
        node.last_seen = self.clock()
        node.load = load
        if node_id in self.placement.silent:
            log.info("node heard again: a source once more", extra={"node": node_id})
            self.placement.heard(node_id)

    def leave(self, node_id: str) -> None:
        self._forget(self.node(node_id), reason="left")

    def node(self, node_id: str) -> Node:
        node = self.nodes.get(node_id)
        if node is None:
            raise NodeUnknown(f"unknown node {node_id[:80]!r}: join first")
        return node

    def _forget(self, node: Node, reason: str | None, keep_leases: bool = False) -> None:
        """Remove a node that left, expired (`reason`) or joined again (None)."""
        del self.nodes[node.id]
        lost = self.store.remove_node(node.id)
        self.refs.drop_node(node.id)
        node.mailbox.close()
        if reason is not None:
            self.board.node_gone(node.id, f"node {reason}", self.clock())
        self.placement.node_gone(node, lost, keep_leases)

    # ---- inventory ----

    def announce(
        self, node_id: str, holdings: Sequence[Holding], refs: Sequence[tuple[str, str]]
    ) -> None:
        node = self.node(node_id)
        limits.count(len(holdings), limits.MAX_BLOBS_PER_CALL, "blobs")
        limits.count(len(refs), limits.MAX_REFS_PER_CALL, "refs")
        checked = [self._checked(h) for h in holdings if h.complete or h.partial]
        for ref, digest in refs:
            limits.ref(ref)
            limits.digest(digest)
        if self.store.blob_count(node_id) + len(checked) > MAX_BLOBS_PER_NODE:
            raise InvalidArgument(f"a node may announce at most {MAX_BLOBS_PER_NODE} blobs")
        if self.refs.count(node_id) + len(refs) > MAX_REFS_PER_NODE:
            raise InvalidArgument(f"a node may announce at most {MAX_REFS_PER_NODE} refs")
        for holding, complete, partial in checked:
            blob = self.placement.blob(holding.digest, holding.size, holding.chunk_count)
            newly = self.store.hold(node.id, blob.digest, complete, partial)
            for chunk in indices_of(newly):
                self.placement.gained(blob, chunk)
            self.placement.forget_if_complete(blob, node.id)
        for ref, digest in refs:
            self.refs.add(node.id, ref, digest)

    def _checked(self, holding: Holding) -> tuple[Holding, int, int]:
        self.placement.check_blob(holding.digest, holding.size, holding.chunk_count)
        complete = limits.chunk_indices(holding.complete, holding.chunk_count)
        partial = limits.chunk_indices(holding.partial, holding.chunk_count)
        return holding, mask_of(complete), mask_of(partial - complete)

    def withdraw(
        self,
        node_id: str,
        digests: Sequence[str],
        refs: Sequence[tuple[str, str]],
        corrupt: bool = False,
    ) -> None:
        node = self.node(node_id)
        limits.count(len(digests), limits.MAX_BLOBS_PER_CALL, "digests")
        limits.count(len(refs), limits.MAX_REFS_PER_CALL, "refs")
        for digest in digests:
            limits.digest(digest)
            lost = self.store.drop(node.id, digest)
            blob = self.blobs.get(digest)
            if blob is not None:
                for chunk in indices_of(lost):
                    self.placement.lost(blob, chunk)
                if corrupt:
                    self.placement.distrust(blob)
                self.placement.drop_if_idle(blob)
        for ref, digest in refs:
            self.refs.remove(node.id, ref, digest)

    # ---- placement ----

    def locate(
        self,
        node_id: str,
        digest: str,
        size: int,
        chunk_count: int,
        chunks: Iterable[int] = (),
        max_leases: int = 0,
        with_metainfo: bool = True,
    ) -> list[ChunkView]:
        node = self.node(node_id)
        return self.placement.locate(
            node, digest, size, chunk_count, chunks, max_leases, with_metainfo
        )

    def view(self, node_id: str, digest: str, chunks: Iterable[int]) -> list[ChunkView]:
        return self.placement.view(self.node(node_id), digest, chunks)

    def renew(
        self, node_id: str, digest: str, chunk: int, progress: int, fetched: bool = False
    ) -> float | None:
        self.node(node_id)
        return self.placement.renew(node_id, digest, chunk, progress, fetched)

    def release(self, node_id: str, digest: str, chunk: int) -> None:
        self.node(node_id)
        self.placement.release(node_id, digest, chunk)

    def publish(
        self, node_id: str, digest: str, size: int, chunk_count: int, chunk: int, metainfo: bytes
    ) -> None:
        node = self.node(node_id)
        self.placement.publish(node, digest, size, chunk_count, chunk, metainfo)

    def watch(self, node_id: str, digest: str, size: int, chunk_count: int) -> Watcher:
        return self.placement.watch(self.node(node_id), digest, size, chunk_count)

    def unwatch(self, watcher: Watcher) -> None:
        self.placement.unwatch(watcher)

    # ---- seeded refs ----

    def resolve(self, ref: str, node_id: str = "") -> list[tuple[str, int, list[Candidate]]]:
        """Each digest announced for `ref`: how many nodes hold it, and a ranked handout."""
        limits.ref(ref)
        asking = self.nodes.get(node_id)
        zone = asking.zone if asking else ""
        out = []
        for resolution in self.refs.resolve(ref):
            alive = [self.nodes[n] for n in resolution.holders if n in self.nodes]
            candidates = [Candidate(n.id, n.zone, True) for n in alive]
            ranked = rank(node_id, zone, candidates, self.policy.max_peers, self.rng)
            out.append((resolution.digest, len(alive), ranked))
        return out

    # ---- preheat and tasks ----

    def preheat(self, image: str, count: int, zone: str, timeout: float) -> PreheatJob:
        """Place `image` on `count` nodes (0: all) of `zone` (empty: any), chosen by rendezvous
        hashing so that repeating a preheat mostly hits the same nodes."""
        limits.ref(image)
        limits.zone(zone)
        eligible = [n.id for n in self.nodes.values() if not zone or n.zone == zone]
        if not eligible:
            raise NoTargets(f"no node matches (zone {zone!r})" if zone else "no node has joined")
        targets = rendezvous.choose(image, eligible, count or None)
        deadline = timeout if timeout > 0 else self.policy.preheat_timeout
        job = self.board.create(image, targets, self.clock(), deadline)
        for node_id in targets:
            if not self.nodes[node_id].mailbox.put(PreheatOrder(job.id, image)):
                self.board.report(node_id, job.id, False, "node's task queue is full", self.clock())
        return job

    def mailbox(self, node_id: str) -> Mailbox[Order]:
        return self.node(node_id).mailbox

    def delivered(self, node_id: str, order: Order) -> None:
        if isinstance(order, PreheatOrder):
            self.board.delivered(node_id, order.task_id)

    def report(self, node_id: str, task_id: str, ok: bool, message: str) -> None:
        self.node(node_id)
        if task_id.startswith("republish-"):
            return
        self.board.report(node_id, task_id, ok, message, self.clock())

    # ---- life cycle ----

    def sweep(self) -> None:
        """Forget silent nodes, lapse stalled leases, time out jobs; run it every second or so."""
        now = self.clock()
        for node in [n for n in self.nodes.values() if now - n.last_seen > self.policy.node_ttl]:
            log.warning("node expired: no heartbeat", extra={"node": node.id})
            self._forget(node, reason="expired: no heartbeat")
        silent_after = self.policy.silent_after
        for node in self.nodes.values():
            if silent_after <= 0 or node.id in self.placement.silent:
                continue
            if now - node.last_seen > silent_after:
                log.warning(
                    "node missed heartbeats: no chunk's source until heard again",
                    extra={"node": node.id, "silent_seconds": round(now - node.last_seen, 1)},
                )
                self.placement.silence(node.id)
        self.placement.tick()
        self.board.expire(now)
        if now - self._last_prune > PRUNE_SECONDS:
            self._last_prune = now
            self.placement.prune(now)

    def close_streams(self) -> None:
        """End every Watch and Tasks stream (the server is stopping)."""
        for node in self.nodes.values():
            node.mailbox.close()
            for watcher in node.watchers:
                watcher.close()
