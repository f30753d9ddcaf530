"""Placement of a blob's chunks (DESIGN section 3): who fetches a cold chunk from upstream (its
lease), whom each requester is told to swarm from (handouts and fan-out), and which changes the
blob's watchers hear about.

Per chunk, in order:
- no complete holder: it is cold. One lease holder fetches it (FETCH); the others WAIT. A lease
  that lapses, is released, or whose holder goes moves at once to a watcher that wants it.
- one complete holder (the fetcher that published it, or a seeder): SWARM, but only `fanout`
  requesters (chosen rotating by chunk) are told about that single source; the others are given
  those requesters, so the source's egress feeds K streams, not N.
- more complete holders: SWARM from a ranked handout.

Owned by the tracker's event loop like the rest of the state: no method awaits.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from tracker import limits
from tracker.errors import FailedPrecondition, InvalidArgument, MetainfoConflict
from tracker.handout import Candidate, rank
from tracker.leases import LeaseTable
from tracker.mailbox import Watcher
from tracker.nodes import Node
from tracker.peerstore import PeerStore, indices_of
from tracker.policy import Policy
from tracker.tasks import RepublishOrder

MAX_WATCHES_PER_NODE = 4096
MAX_REQUESTED_PER_NODE = 100_000  # blobs one node asked about in the last REQUESTER_TTL
REQUESTER_TTL = 600.0  # a requester that neither watches nor asks for this long is forgotten


class Directive(enum.Enum):
    FETCH = 1  # you hold the lease: fetch from upstream, publish, seed
    WAIT = 2  # someone else holds the lease, or the chunk awaits one
    SWARM = 3  # the chunk has sources: swarm it from the peers given


@dataclass(frozen=True)
class ChunkView:
    index: int
    directive: Directive
    metainfo: bytes | None
    peers: list[Candidate]
    lease_holder: str | None = None
    lease_seconds: float = 0.0


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


class Placement:
    def __init__(
        self,
        policy: Policy,
        clock: Callable[[], float],
        rng: random.Random,
        store: PeerStore,
        nodes: Mapping[str, Node],
        next_task_id: Callable[[str], str],
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.rng = rng
        self.store = store
        self.nodes = nodes  # the cluster's members, read-only here
        self.leases = LeaseTable(policy.lease_ttl)
        self.blobs: dict[str, Blob] = {}
        self._watched: dict[str, Blob] = {}  # blobs someone watches, the longest watched first
        # Members that missed heartbeats: likely dead, so until they expire or are heard from
        # again they are handed out to nobody, count as no chunk's source, and get no lease.
        self.silent: set[str] = set()
        self._next_task_id = next_task_id

    # ---- blobs ----

    def check_blob(self, digest: str, size: int, chunk_count: int) -> None:
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

    def blob(self, digest: str, size: int, chunk_count: int) -> Blob:
        self.check_blob(digest, size, chunk_count)
        blob = self.blobs.get(digest)
        if blob is None:
            blob = self.blobs[digest] = Blob(digest, size, chunk_count)
        return blob

    def check_requests(self, node: Node, digest: str) -> None:
        if digest not in node.requested and len(node.requested) >= MAX_REQUESTED_PER_NODE:
            raise InvalidArgument(f"a node may ask about {MAX_REQUESTED_PER_NODE} blobs at most")

    def drop_if_idle(self, blob: Blob) -> None:
        idle = (
            not blob.watchers
            and not blob.requesters
            and not self.store.has_blob(blob.digest)
            and not self.leases.leased(blob.digest)
        )
        if idle:
            del self.blobs[blob.digest]

    # ---- requests ----

    def locate(
        self,
        node: Node,
        digest: str,
        size: int,
        chunk_count: int,
        chunks: Iterable[int],
        max_leases: int,
        with_metainfo: bool,
    ) -> list[ChunkView]:
        self.check_blob(digest, size, chunk_count)
        wanted = sorted(limits.chunk_indices(chunks, chunk_count)) or range(chunk_count)
        self.check_requests(node, digest)
        blob = self.blob(digest, size, chunk_count)
        self.tick()
        self._note_requester(node, blob)
        budget = min(
            min(max_leases, self.policy.max_leases) - self.leases.count(node.id, digest),
            self.policy.blob_leases - self.leases.fetching(digest),
            self.policy.upstream_leases - self.leases.fetching(),
        )
        for chunk in wanted:
            if budget <= 0:
                break
            if self._grantable(blob, chunk, node.id):
                self._grant(blob, chunk, node.id)
                budget -= 1
        views = [self._view(blob, chunk, node, with_metainfo) for chunk in wanted]
        self._ask_republish(blob, views)
        return views

    def view(self, node: Node, digest: str, chunks: Iterable[int]) -> list[ChunkView]:
        """What Locate would show the node for these chunks, without granting anything."""
        blob = self.blobs.get(digest)
        if blob is None:
            return []
        return [self._view(blob, c, node, True) for c in chunks if c < blob.chunk_count]

    def renew(
        self, node_id: str, digest: str, chunk: int, progress: int, fetched: bool = False
    ) -> float | None:
        """Seconds left on the node's lease (extended when `progress` grew), or None if lost.
        A lease `fetched` no longer takes an upstream slot: the next cold chunk gets it."""
        limits.digest(digest)
        self.tick()
        lease = self.leases.renew(node_id, digest, chunk, progress, self.clock())
        if lease is None:
            return None
        if fetched and self.leases.fetched(digest, chunk):
            self.fill_slots()
        return lease.expires_at - self.clock()

    def release(self, node_id: str, digest: str, chunk: int) -> None:
        """The holder gives up its lease (its fetch failed): move it to another requester."""
        limits.digest(digest)
        lease = self.leases.get(digest, chunk)
        if lease is not None and lease.holder == node_id:
            self.leases.release(digest, chunk)
            self._changed_blob(digest, chunk)
            self.fill_slots(exclude=node_id)

    def publish(
        self, node: Node, digest: str, size: int, chunk_count: int, chunk: int, metainfo: bytes
    ) -> None:
        self.check_blob(digest, size, chunk_count)
        limits.chunk_indices((chunk,), chunk_count)
        limits.metainfo(metainfo)
        blob = self.blob(digest, size, chunk_count)
        known = blob.metainfo.get(chunk)
        if known is not None and known != metainfo:
            raise MetainfoConflict(f"{digest} chunk {chunk} was published with other metainfo")
        blob.metainfo[chunk] = metainfo
        blob.republish_asked.pop(chunk, None)
        if self.store.hold(node.id, digest, 1 << chunk, 0):
            self.gained(blob, chunk)
            self.forget_if_complete(blob, node.id)
        elif known is None:
            self._changed(blob, chunk)

    def distrust(self, blob: Blob) -> None:
        """A node pulled the blob with the metainfo known and it failed its digest check: forget
        the metainfo of every chunk nobody holds whole any more, so each is fetched anew."""
        for chunk in list(blob.metainfo):
            if self.store.complete_count(blob.digest, chunk) == 0:
                del blob.metainfo[chunk]
                self._changed(blob, chunk)

    def watch(self, node: Node, digest: str, size: int, chunk_count: int) -> Watcher:
        if len(node.watchers) >= MAX_WATCHES_PER_NODE:
            raise InvalidArgument(f"a node may watch at most {MAX_WATCHES_PER_NODE} blobs")
        self.check_blob(digest, size, chunk_count)
        self.check_requests(node, digest)
        blob = self.blob(digest, size, chunk_count)
        watcher = Watcher(node.id, digest)
        node.watchers.add(watcher)
        blob.watchers.add(watcher)
        self._watched.setdefault(digest, blob)
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
            if not blob.watchers:
                self._watched.pop(blob.digest, None)
            self.drop_if_idle(blob)

    def _note_requester(self, node: Node, blob: Blob) -> None:
        blob.requesters[node.id] = self.clock()
        node.requested.add(blob.digest)

    # ---- leases ----

    def _grantable(self, blob: Blob, chunk: int, node_id: str) -> bool:
        return (
            self.leases.get(blob.digest, chunk) is None
            and self.sources(blob.digest, chunk) == 0
            and not self.store.masks(node_id, blob.digest)[0] >> chunk & 1
        )

    def _grant(self, blob: Blob, chunk: int, node_id: str) -> None:
        self.leases.grant(node_id, blob.digest, chunk, self.clock())
        self._changed(blob, chunk)

    def fill_slots(self, exclude: str = "") -> None:
        """Give free upstream slots to cold chunks: the longest watched blob first, its chunks
        in order, each to one of the blob's watchers, which hears FETCH on its watch stream. So
        nodes never poll for a lease, and the blobs of an image arrive one after another, in
        the order clients ask for them, rather than all together at the end."""
        for blob in list(self._watched.values()):
            if self.leases.fetching() >= self.policy.upstream_leases:
                return
            self._fill_blob(blob, exclude)

    def _fill_blob(self, blob: Blob, exclude: str) -> None:
        for chunk in range(blob.chunk_count):
            if (
                self.leases.fetching() >= self.policy.upstream_leases
                or self.leases.fetching(blob.digest) >= self.policy.blob_leases
            ):
                return
            if not self._grantable(blob, chunk, ""):
                continue
            holder = self._watcher_for(blob, chunk, exclude)
            if holder is not None:
                self._grant(blob, chunk, holder)

    def _watcher_for(self, blob: Blob, chunk: int, exclude: str) -> str | None:
        """The watcher to fetch a cold chunk: among those under their lease cap, one that has
        not missed a heartbeat (a node that died holds no lease, so it would look least busy
        until it expires), then the one fetching least, rotating by chunk among equals."""
        cap = self.policy.max_leases
        candidates = sorted(
            {
                w.node_id
                for w in blob.watchers
                if w.node_id != exclude
                and w.node_id in self.nodes
                and self.leases.count(w.node_id, blob.digest) < cap
                and self._grantable(blob, chunk, w.node_id)
            }
        )
        if not candidates:
            return None
        start = chunk % len(candidates)
        rotated = candidates[start:] + candidates[:start]
        return min(rotated, key=lambda n: (n in self.silent, self.leases.count_held(n)))

    def sources(self, digest: str, chunk: int) -> int:
        """How many members that are not silent hold the chunk whole."""
        count = self.store.complete_count(digest, chunk)
        if count and self.silent:
            count -= sum(1 for n in self.silent if self.store.masks(n, digest)[0] >> chunk & 1)
        return count

    def _heard(self, node_id: str) -> bool:
        """A member that has not missed its heartbeats (neither gone nor silent)."""
        return node_id in self.nodes and node_id not in self.silent

    def silence(self, node_id: str) -> None:
        """The member missed heartbeats: its chunks are placed as if it were gone, and its
        leases move on (were it only slow, its fetch still lands: the same bytes publish the
        same metainfo)."""
        if node_id not in self.silent:
            self.silent.add(node_id)
            for lease in self.leases.held_by(node_id):
                self.leases.release(lease.digest, lease.chunk)
                self._changed_blob(lease.digest, lease.chunk)
            self._holdings_changed(node_id)
            self.fill_slots()

    def heard(self, node_id: str) -> None:
        """A silent member heartbeated again: it is a source once more, and the leases given
        meanwhile on chunks it holds whole end (a chunk with a source is not fetched)."""
        if node_id in self.silent:
            self.silent.discard(node_id)
            for digest, (complete, _) in self.store.holdings(node_id).items():
                for chunk in indices_of(complete):
                    self.leases.release(digest, chunk)
            self._holdings_changed(node_id)
            self.fill_slots()

    def _holdings_changed(self, node_id: str) -> None:
        for digest, (complete, partial) in self.store.holdings(node_id).items():
            blob = self.blobs.get(digest)
            if blob is not None:
                for chunk in indices_of(complete | partial):
                    self._changed(blob, chunk)

    def tick(self) -> None:
        """Lapse the leases whose time ran out and move them on."""
        for lease in self.leases.expire(self.clock()):
            self._changed_blob(lease.digest, lease.chunk)
            self.fill_slots(exclude=lease.holder)

    # ---- views and fan-out ----

    def _view(self, blob: Blob, chunk: int, node: Node, with_metainfo: bool) -> ChunkView:
        bound = self.policy.max_peers
        metainfo = blob.metainfo.get(chunk) if with_metainfo else None
        peers = self.store.handout(blob.digest, chunk, node.id, node.zone, bound, self.silent)
        complete = self.sources(blob.digest, chunk)
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
        the others get those requesters instead.

        A requester's connection to a relay that has not added the chunk's torrent yet is
        refused, and libtorrent tries again only a second later; so a relay is also told of the
        requesters it relays to, and whichever of two nodes adds the torrent last connects to
        the one that added it first."""
        source = peers[0].node_id
        members = self._fanout_members(blob, chunk)
        if node.id in members or len(members) < self.policy.fanout:
            members.setdefault(node.id, self.clock())
            known = {p.node_id for p in peers} | members.keys()
            relayed = [
                Candidate(r, self.nodes[r].zone, False)
                for r in self._waiting(blob, chunk, source)
                if r not in known
            ]
            return [*peers, *relayed][: self.policy.max_peers]
        partial = [p for p in peers if p.node_id != source]
        relays = [Candidate(m, self.nodes[m].zone, False) for m in members if m != node.id]
        return rank(node.id, node.zone, [*partial, *relays], self.policy.max_peers, self.rng)

    def _fanout_members(self, blob: Blob, chunk: int) -> dict[str, float]:
        """The chunk's fan-out members, without those that died, went silent (the others would
        wait on them until they expire) or never started swarming."""
        members = blob.fanout.setdefault(chunk, {})
        now = self.clock()
        for member, since in list(members.items()):
            complete, partial = self.store.masks(member, blob.digest)
            started = (complete | partial) >> chunk & 1
            if not self._heard(member) or (not started and now - since > self.policy.lease_ttl):
                del members[member]
        return members

    def _assign_fanout(self, blob: Blob, chunk: int, source: str) -> None:
        """Pick the chunk's fan-out members among its waiting requesters, rotating by chunk so
        that each requester relays a share of the chunks."""
        waiting = self._waiting(blob, chunk, source)
        if not waiting:
            blob.fanout.pop(chunk, None)
            return
        k = min(self.policy.fanout, len(waiting))
        start = (chunk * self.policy.fanout) % len(waiting)
        now = self.clock()
        blob.fanout[chunk] = {waiting[(start + i) % len(waiting)]: now for i in range(k)}

    def _waiting(self, blob: Blob, chunk: int, source: str) -> list[str]:
        """The blob's requesters, in arrival order, that lack the chunk (the source aside)."""
        return [
            r
            for r in blob.requesters
            if r != source
            and self._heard(r)
            and not self.store.masks(r, blob.digest)[0] >> chunk & 1
        ]

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
            task_id = self._next_task_id("republish")
            order = RepublishOrder(task_id, blob.digest, blob.size, blob.chunk_count, tuple(chunks))
            self.nodes[holder].mailbox.put(order)

    # ---- chunk events ----

    def _changed(self, blob: Blob, chunk: int) -> None:
        for watcher in blob.watchers:
            watcher.mark(chunk)

    def _changed_blob(self, digest: str, chunk: int) -> None:
        blob = self.blobs.get(digest)
        if blob is not None:
            self._changed(blob, chunk)

    def gained(self, blob: Blob, chunk: int) -> None:
        """A node now holds the chunk complete."""
        count = self.store.complete_count(blob.digest, chunk)
        if self.leases.release(blob.digest, chunk) is not None:
            self.fill_slots()
        if count == 1:
            source = self.store.handout(blob.digest, chunk, "", "", 1)[0].node_id
            self._assign_fanout(blob, chunk, source)
        elif count == 2:
            blob.fanout.pop(chunk, None)
        if count <= 2:
            self._changed(blob, chunk)

    def lost(self, blob: Blob, chunk: int) -> None:
        """A node no longer holds the chunk complete."""
        count = self.store.complete_count(blob.digest, chunk)
        if count == 0:
            blob.fanout.pop(chunk, None)
            self.fill_slots()
        if count <= 1:
            self._changed(blob, chunk)

    def forget_if_complete(self, blob: Blob, node_id: str) -> None:
        complete, _ = self.store.masks(node_id, blob.digest)
        if complete == (1 << blob.chunk_count) - 1 and node_id in blob.requesters:
            self._forget_requester(blob, node_id)

    def _forget_requester(self, blob: Blob, node_id: str) -> None:
        del blob.requesters[node_id]
        node = self.nodes.get(node_id)
        if node is not None:
            node.requested.discard(blob.digest)

    # ---- departures and expiry ----

    def node_gone(self, node: Node, lost: dict[str, int], keep_leases: bool) -> None:
        """Undo a departed node's part: its watches, requests, leases and lost chunks. `node` is
        no longer among the members; `lost` are the chunks it held complete, by digest."""
        self.silent.discard(node.id)
        released = [] if keep_leases else self.leases.held_by(node.id)
        for lease in released:
            self.leases.release(lease.digest, lease.chunk)
        for watcher in list(node.watchers):
            self.unwatch(watcher)
        for digest in node.requested:
            blob = self.blobs.get(digest)
            if blob is not None:
                blob.requesters.pop(node.id, None)
        for digest, mask in lost.items():
            blob = self.blobs.get(digest)
            if blob is not None:
                for chunk in indices_of(mask):
                    self.lost(blob, chunk)
        for lease in released:
            self._changed_blob(lease.digest, lease.chunk)
        self.fill_slots(exclude=node.id)
        for digest in {*node.requested, *lost, *(lease.digest for lease in released)}:
            blob = self.blobs.get(digest)
            if blob is not None:
                self.drop_if_idle(blob)

    def prune(self, now: float) -> None:
        """Forget requesters that neither watch nor asked lately, and blobs left with nothing."""
        for blob in list(self.blobs.values()):
            watching = {w.node_id for w in blob.watchers}
            for node_id, asked in list(blob.requesters.items()):
                if node_id not in watching and now - asked > REQUESTER_TTL:
                    self._forget_requester(blob, node_id)
            self.drop_if_idle(blob)
