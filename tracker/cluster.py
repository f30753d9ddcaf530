"""The tracker's soft state, and every rule that changes it.

State: the nodes (membership), what they hold (the peer store), blobs (shape, published metainfo,
who asked for them, the fan-out of single-source chunks), leases, seeded refs and preheat jobs.
All of it is rebuilt from the nodes after a restart.

Invariant: the cluster is owned by one event loop and no method awaits, so every call runs to
completion before the next begins. That is what makes "at most one lease holder per chunk" hold
under any number of concurrent RPCs. Time comes from `clock`, so tests can drive expiry by hand.
"""

from __future__ import annotations

import enum
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from tracker import limits, rendezvous
from tracker.errors import (
    FailedPrecondition,
    InvalidArgument,
    MetainfoConflict,
    NodeUnknown,
    NoTargets,
)
from tracker.handout import Candidate, rank
from tracker.leases import LeaseTable
from tracker.mailbox import Mailbox, Watcher
from tracker.peerstore import IndexedPeerStore, PeerStore, indices_of, mask_of
from tracker.refs import RefIndex
from tracker.tasks import Order, PreheatJob, PreheatOrder, RepublishOrder, TaskBoard, TaskState

MAX_BLOBS_PER_NODE = 200_000
MAX_REFS_PER_NODE = 100_000
MAX_WATCHES_PER_NODE = 4096
MAILBOX_BOUND = 4096
REQUESTER_TTL = 600.0  # a requester that neither watches nor asks for this long is forgotten


@dataclass
class Policy:
    """Tracker tunables (each one a flag of `distributed-images tracker`)."""

    heartbeat_interval: float = field(
        default=5.0, metadata={"help": "seconds between a node's heartbeats", "metavar": "S"}
    )
    node_ttl: float = field(
        default=15.0, metadata={"help": "forget a node after this long silent", "metavar": "S"}
    )
    lease_ttl: float = field(
        default=10.0,
        metadata={"help": "a lease lapses after this long without progress", "metavar": "S"},
    )
    max_peers: int = field(default=20, metadata={"help": "peers per chunk handout", "metavar": "N"})
    fanout: int = field(
        default=2,
        metadata={"help": "requesters given a chunk's single source (DESIGN 3)", "metavar": "K"},
    )
    max_leases: int = field(
        default=4, metadata={"help": "leases one node may hold per blob", "metavar": "N"}
    )
    preheat_timeout: float = field(
        default=3600.0, metadata={"help": "default preheat deadline", "metavar": "S"}
    )


class Directive(enum.Enum):
    FETCH = 1
    WAIT = 2
    SWARM = 3


@dataclass(frozen=True)
class Load:
    uploads: int = 0
    downloads: int = 0
    upload_bytes_per_second: int = 0
    download_bytes_per_second: int = 0
    store_bytes: int = 0


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


@dataclass(frozen=True)
class ChunkView:
    index: int
    directive: Directive
    metainfo: bytes | None
    peers: list[Candidate]
    lease_holder: str | None = None
    lease_seconds: float = 0.0


@dataclass(eq=False)
class Node:
    id: str
    instance: str
    registry: str
    peer: str
    zone: str
    joined_at: float
    last_seen: float
    load: Load = Load()
    requested: set[str] = field(default_factory=set)
    watchers: set[Watcher] = field(default_factory=set)
    mailbox: Mailbox[Order] = field(default_factory=lambda: Mailbox(MAILBOX_BOUND))


@dataclass(eq=False)
class Blob:
    digest: str
    size: int
    chunk_count: int
    metainfo: dict[int, bytes] = field(default_factory=dict)
    requesters: dict[str, float] = field(default_factory=dict)  # arrival order; last asked
    watchers: set[Watcher] = field(default_factory=set)
    fanout: dict[int, dict[str, float]] = field(default_factory=dict)  # chunk -> member -> since
    republish_asked: dict[int, float] = field(default_factory=dict)


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
        self.leases = LeaseTable(self.policy.lease_ttl)
        self.refs = RefIndex()
        self.board = TaskBoard()
        self.nodes: dict[str, Node] = {}
        self.blobs: dict[str, Blob] = {}
        self.instance = uuid.uuid4().hex[:12]
        self.started_at = clock()
        self._last_prune = self.started_at

    # ---- membership ----

    def join(self, node_id: str, registry: str, peer: str, zone: str, instance: str) -> Session:
        limits.node_id(node_id)
        limits.address(registry, "registry address")
        limits.address(peer, "peer address")
        limits.zone(zone)
        now = self.clock()
        old = self.nodes.get(node_id)
        restarted = old is None or old.instance != instance
        if old is not None:
            self._forget(old, "joined again", keep_leases=not restarted)
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

    def leave(self, node_id: str) -> None:
        self._forget(self.node(node_id), "left")

    def node(self, node_id: str) -> Node:
        node = self.nodes.get(node_id)
        if node is None:
            raise NodeUnknown(f"unknown node {node_id[:80]!r}: join first")
        return node

    # ---- inventory ----

    def announce(
        self, node_id: str, holdings: Sequence[Holding], refs: Sequence[tuple[str, str]]
    ) -> None:
        node = self.node(node_id)
        limits.count(len(holdings), limits.MAX_BLOBS_PER_CALL, "blobs")
        limits.count(len(refs), limits.MAX_REFS_PER_CALL, "refs")
        checked = [self._checked_holding(h) for h in holdings if h.complete or h.partial]
        for ref, digest in refs:
            limits.ref(ref)
            limits.digest(digest)
        if self.store.blob_count(node_id) + len(checked) > MAX_BLOBS_PER_NODE:
            raise InvalidArgument(f"a node may announce at most {MAX_BLOBS_PER_NODE} blobs")
        if self.refs.count(node_id) + len(refs) > MAX_REFS_PER_NODE:
            raise InvalidArgument(f"a node may announce at most {MAX_REFS_PER_NODE} refs")
        for holding, complete, partial in checked:
            blob = self._blob(holding.digest, holding.size, holding.chunk_count)
            newly = self.store.hold(node.id, blob.digest, complete, partial)
            for chunk in indices_of(newly):
                self._gained(blob, chunk)
            self._forget_if_complete(blob, node.id)
        for ref, digest in refs:
            self.refs.add(node.id, ref, digest)

    def withdraw(
        self, node_id: str, digests: Sequence[str], refs: Sequence[tuple[str, str]]
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
                    self._lost(blob, chunk)
                self._drop_if_idle(blob)
        for ref, digest in refs:
            self.refs.remove(node.id, ref, digest)

    def _checked_holding(self, holding: Holding) -> tuple[Holding, int, int]:
        self._check_blob(holding.digest, holding.size, holding.chunk_count)
        complete = limits.chunk_indices(holding.complete, holding.chunk_count)
        partial = limits.chunk_indices(holding.partial, holding.chunk_count)
        return holding, mask_of(complete), mask_of(partial - complete)

    def _check_blob(self, digest: str, size: int, chunk_count: int) -> None:
        """Raise unless the blob is well-formed and agrees with what is known of it. Callers
        check everything before they change anything, so a rejected request leaves no trace."""
        limits.digest(digest)
        limits.blob_shape(size, chunk_count)
        blob = self.blobs.get(digest)
        if blob is not None and (blob.size, blob.chunk_count) != (size, chunk_count):
            raise FailedPrecondition(
                f"{digest} is known as {blob.size} bytes in {blob.chunk_count} chunks,"
                f" not {size} in {chunk_count}"
            )

    def _blob(self, digest: str, size: int, chunk_count: int) -> Blob:
        self._check_blob(digest, size, chunk_count)
        blob = self.blobs.get(digest)
        if blob is None:
            blob = self.blobs[digest] = Blob(digest, size, chunk_count)
        return blob

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
        self._check_blob(digest, size, chunk_count)
        wanted = sorted(limits.chunk_indices(chunks, chunk_count)) or range(chunk_count)
        blob = self._blob(digest, size, chunk_count)
        self._tick()
        self._note_requester(node, blob)
        budget = min(max_leases, self.policy.max_leases) - self.leases.count(node_id, digest)
        for chunk in wanted:
            if budget <= 0:
                break
            if self._grantable(blob, chunk, node_id):
                self._grant(blob, chunk, node_id)
                budget -= 1
        views = [self._view(blob, chunk, node, with_metainfo) for chunk in wanted]
        self._ask_republish(blob, views)
        return views

    def view(self, node_id: str, digest: str, chunks: Iterable[int]) -> list[ChunkView]:
        """What Locate would show the node for these chunks, without granting anything."""
        node = self.node(node_id)
        blob = self.blobs.get(digest)
        if blob is None:
            return []
        return [self._view(blob, c, node, True) for c in chunks if c < blob.chunk_count]

    def renew(self, node_id: str, digest: str, chunk: int, progress: int) -> float | None:
        """Seconds left on the node's lease (extended when `progress` grew), or None if lost."""
        self.node(node_id)
        limits.digest(digest)
        self._tick()
        lease = self.leases.renew(node_id, digest, chunk, progress, self.clock())
        return None if lease is None else lease.expires_at - self.clock()

    def release(self, node_id: str, digest: str, chunk: int) -> None:
        """The holder gives up its lease (its fetch failed): move it to another requester."""
        self.node(node_id)
        limits.digest(digest)
        lease = self.leases.get(digest, chunk)
        if lease is not None and lease.holder == node_id:
            self.leases.release(digest, chunk)
            self._reassign(digest, chunk, exclude=node_id)

    def publish(
        self, node_id: str, digest: str, size: int, chunk_count: int, chunk: int, metainfo: bytes
    ) -> None:
        node = self.node(node_id)
        self._check_blob(digest, size, chunk_count)
        limits.chunk_indices((chunk,), chunk_count)
        limits.metainfo(metainfo)
        blob = self._blob(digest, size, chunk_count)
        known = blob.metainfo.get(chunk)
        if known is not None and known != metainfo:
            raise MetainfoConflict(f"{digest} chunk {chunk} was published with other metainfo")
        blob.metainfo[chunk] = metainfo
        blob.republish_asked.pop(chunk, None)
        if self.store.hold(node.id, digest, 1 << chunk, 0):
            self._gained(blob, chunk)
            self._forget_if_complete(blob, node.id)
        elif known is None:
            self._changed(blob, chunk)

    def watch(self, node_id: str, digest: str, size: int, chunk_count: int) -> Watcher:
        node = self.node(node_id)
        if len(node.watchers) >= MAX_WATCHES_PER_NODE:
            raise InvalidArgument(f"a node may watch at most {MAX_WATCHES_PER_NODE} blobs")
        blob = self._blob(digest, size, chunk_count)
        watcher = Watcher(node_id, digest)
        node.watchers.add(watcher)
        blob.watchers.add(watcher)
        self._note_requester(node, blob)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        watcher.close()
        node = self.nodes.get(watcher.node_id)
        if node is not None:
            node.watchers.discard(watcher)
        blob = self.blobs.get(watcher.digest)
        if blob is not None:
            blob.watchers.discard(watcher)
            self._drop_if_idle(blob)

    def _note_requester(self, node: Node, blob: Blob) -> None:
        blob.requesters[node.id] = self.clock()
        node.requested.add(blob.digest)

    def _grantable(self, blob: Blob, chunk: int, node_id: str) -> bool:
        return (
            self.leases.get(blob.digest, chunk) is None
            and self.store.complete_count(blob.digest, chunk) == 0
            and not self.store.masks(node_id, blob.digest)[0] >> chunk & 1
        )

    def _grant(self, blob: Blob, chunk: int, node_id: str) -> None:
        self.leases.grant(node_id, blob.digest, chunk, self.clock())
        self._changed(blob, chunk)

    def _view(self, blob: Blob, chunk: int, node: Node, with_metainfo: bool) -> ChunkView:
        bound = self.policy.max_peers
        metainfo = blob.metainfo.get(chunk) if with_metainfo else None
        peers = self.store.handout(blob.digest, chunk, node.id, node.zone, bound)
        complete = self.store.complete_count(blob.digest, chunk)
        if complete == 0:
            lease = self.leases.get(blob.digest, chunk)
            if lease is None:
                return ChunkView(chunk, Directive.WAIT, metainfo, peers)
            mine = lease.holder == node.id
            directive = Directive.FETCH if mine else Directive.WAIT
            left = max(0.0, lease.expires_at - self.clock())
            return ChunkView(chunk, directive, metainfo, peers, lease.holder, left)
        if complete == 1 and peers and peers[0].complete:
            peers = self._fan_out(blob, chunk, node, peers)
        return ChunkView(chunk, Directive.SWARM, metainfo, peers)

    def _fan_out(
        self, blob: Blob, chunk: int, node: Node, peers: list[Candidate]
    ) -> list[Candidate]:
        """While `peers[0]` is the chunk's only source, only `fanout` requesters are told about it;
        the others get those requesters instead (DESIGN section 3)."""
        source = peers[0].node_id
        members = self._fanout_members(blob, chunk)
        if node.id in members:
            return peers
        if len(members) < self.policy.fanout:
            members[node.id] = self.clock()
            return peers
        partial = [p for p in peers if p.node_id != source]
        relays = [Candidate(m, self.nodes[m].zone, False) for m in members if m != node.id]
        return rank(node.id, node.zone, [*partial, *relays], self.policy.max_peers, self.rng)

    def _fanout_members(self, blob: Blob, chunk: int) -> dict[str, float]:
        """The chunk's fan-out members, without those that died or never started swarming."""
        members = blob.fanout.setdefault(chunk, {})
        now = self.clock()
        for member, since in list(members.items()):
            complete, partial = self.store.masks(member, blob.digest)
            started = (complete | partial) >> chunk & 1
            if member not in self.nodes or (not started and now - since > self.policy.lease_ttl):
                del members[member]
        return members

    def _assign_fanout(self, blob: Blob, chunk: int, source: str) -> None:
        """Pick the chunk's fan-out members among its waiting requesters, rotating by chunk so
        that each requester relays a share of the chunks."""
        waiting = [
            r
            for r in blob.requesters
            if r != source
            and r in self.nodes
            and not self.store.masks(r, blob.digest)[0] >> chunk & 1
        ]
        if not waiting:
            blob.fanout.pop(chunk, None)
            return
        k = min(self.policy.fanout, len(waiting))
        start = (chunk * self.policy.fanout) % len(waiting)
        now = self.clock()
        blob.fanout[chunk] = {waiting[(start + i) % len(waiting)]: now for i in range(k)}

    def _ask_republish(self, blob: Blob, views: list[ChunkView]) -> None:
        """Chunks with sources but no metainfo (the tracker restarted): ask a holder to publish."""
        now = self.clock()
        asks: dict[str, list[int]] = {}
        for view in views:
            if view.directive is not Directive.SWARM or view.index in blob.metainfo:
                continue
            asked = blob.republish_asked.get(view.index)
            holder = next((p.node_id for p in view.peers if p.complete), None)
            if holder is None or (asked is not None and now - asked < self.policy.lease_ttl):
                continue
            blob.republish_asked[view.index] = now
            asks.setdefault(holder, []).append(view.index)
        for holder, chunks in asks.items():
            task_id = self.board.next_id("republish")
            order = RepublishOrder(task_id, blob.digest, blob.size, blob.chunk_count, tuple(chunks))
            self.nodes[holder].mailbox.put(order)

    # ---- chunk events ----

    def _changed(self, blob: Blob, chunk: int) -> None:
        for watcher in blob.watchers:
            watcher.mark(chunk)

    def _gained(self, blob: Blob, chunk: int) -> None:
        """A node now holds the chunk complete."""
        count = self.store.complete_count(blob.digest, chunk)
        self.leases.release(blob.digest, chunk)
        if count == 1:
            source = self.store.handout(blob.digest, chunk, "", "", 1)[0].node_id
            self._assign_fanout(blob, chunk, source)
        elif count == 2:
            blob.fanout.pop(chunk, None)
        if count <= 2:
            self._changed(blob, chunk)

    def _lost(self, blob: Blob, chunk: int) -> None:
        """A node no longer holds the chunk complete."""
        count = self.store.complete_count(blob.digest, chunk)
        if count == 0:
            blob.fanout.pop(chunk, None)
            self._reassign(blob.digest, chunk, exclude="")
        if count <= 1:
            self._changed(blob, chunk)

    def _reassign(self, digest: str, chunk: int, exclude: str) -> None:
        """Give a cold chunk's lease to one of its watchers, if any wants it."""
        blob = self.blobs.get(digest)
        if blob is None or not self._grantable(blob, chunk, ""):
            return
        cap = self.policy.max_leases
        candidates = [
            w.node_id
            for w in blob.watchers
            if w.node_id != exclude
            and w.node_id in self.nodes
            and self.leases.count(w.node_id, blob.digest) < cap
            and self._grantable(blob, chunk, w.node_id)
        ]
        if candidates:
            candidates = sorted(set(candidates))
            start = chunk % len(candidates)
            rotated = candidates[start:] + candidates[:start]
            chosen = min(rotated, key=lambda n: self.leases.count(n, blob.digest))
            self._grant(blob, chunk, chosen)
        else:
            self._changed(blob, chunk)

    def _forget_if_complete(self, blob: Blob, node_id: str) -> None:
        complete, _ = self.store.masks(node_id, blob.digest)
        if complete == (1 << blob.chunk_count) - 1 and node_id in blob.requesters:
            del blob.requesters[node_id]

    # ---- seeded refs ----

    def resolve(self, ref: str, node_id: str = "") -> list[tuple[str, int, list[Candidate]]]:
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

    def close_streams(self) -> None:
        """End every Watch and Tasks stream (the server is stopping)."""
        for node in self.nodes.values():
            node.mailbox.close()
            for watcher in node.watchers:
                watcher.close()

    # ---- expiry ----

    def sweep(self) -> None:
        """Forget silent nodes, lapse stalled leases, time out jobs; run it every second or so."""
        now = self.clock()
        for node in [n for n in self.nodes.values() if now - n.last_seen > self.policy.node_ttl]:
            self._forget(node, "expired: no heartbeat")
        self._tick()
        self.board.expire(now)
        if now - self._last_prune > 30.0:
            self._last_prune = now
            self._prune_requesters(now)

    def _tick(self) -> None:
        for lease in self.leases.expire(self.clock()):
            self._reassign(lease.digest, lease.chunk, exclude=lease.holder)

    def _prune_requesters(self, now: float) -> None:
        for blob in list(self.blobs.values()):
            watching = {w.node_id for w in blob.watchers}
            for node_id, asked in list(blob.requesters.items()):
                if node_id not in watching and now - asked > REQUESTER_TTL:
                    del blob.requesters[node_id]
            self._drop_if_idle(blob)

    def _forget(self, node: Node, reason: str, keep_leases: bool = False) -> None:
        del self.nodes[node.id]
        lost = self.store.remove_node(node.id)
        released = [] if keep_leases else self.leases.held_by(node.id)
        for lease in released:
            self.leases.release(lease.digest, lease.chunk)
        self.refs.drop_node(node.id)
        node.mailbox.close()
        for watcher in list(node.watchers):
            self.unwatch(watcher)
        if reason != "joined again":
            self.board.node_gone(node.id, f"node {reason}", self.clock())
        for digest in node.requested:
            blob = self.blobs.get(digest)
            if blob is not None:
                blob.requesters.pop(node.id, None)
        for digest, mask in lost.items():
            blob = self.blobs.get(digest)
            if blob is not None:
                for chunk in indices_of(mask):
                    self._lost(blob, chunk)
        for lease in released:
            self._reassign(lease.digest, lease.chunk, exclude=node.id)
        for digest in {*node.requested, *lost, *(lease.digest for lease in released)}:
            blob = self.blobs.get(digest)
            if blob is not None:
                self._drop_if_idle(blob)

    def _drop_if_idle(self, blob: Blob) -> None:
        idle = (
            not blob.watchers
            and not blob.requesters
            and not self.store.has_blob(blob.digest)
            and not self.leases.leased(blob.digest)
        )
        if idle:
            del self.blobs[blob.digest]
