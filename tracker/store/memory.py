"""The tracker's state in this process: the default store, with nothing else to run.

Atomic by construction: no method awaits anything, so on the tracker's event loop each call runs
whole before the next begins. The pieces are the plain structures of `tracker.peerstore`,
`tracker.leases`, `tracker.refs` and `tracker.tasks`; this module adds what crosses them (a grant
looks at the peers, the silent members and the leases at once) and puts each behind the async
interface of `tracker.store`.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import uuid
from collections import deque
from collections.abc import Callable, Collection, Sequence

from tracker.errors import FailedPrecondition
from tracker.handout import Candidate, fanout_members
from tracker.hub import Event, Hub
from tracker.leases import Lease, LeaseTable
from tracker.nodes import Load, Node
from tracker.peerstore import IndexedPeerStore, Masks, PeerStore, indices_of
from tracker.refs import RefIndex, Resolution
from tracker.store import (
    Announced,
    Candidacy,
    Caps,
    ChunkState,
    Claim,
    FanoutContext,
    FillContext,
    Gain,
    Replica,
)
from tracker.tasks import Order, PreheatJob, TaskBoard, TaskState
from tracker.witnesses import Witnesses


class MemoryMembers:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.silent_set: set[str] = set()
        self._epochs = itertools.count(1)

    async def join(self, node: Node, max_nodes: int) -> tuple[Node, Node | None]:
        old = self.nodes.get(node.id)
        if old is None and len(self.nodes) >= max_nodes:
            raise FailedPrecondition(f"the cluster is full ({max_nodes} nodes)")
        node = dataclasses.replace(node, epoch=next(self._epochs))
        self.nodes[node.id] = node
        self.silent_set.discard(node.id)
        return node, old

    async def get(self, node_id: str) -> Node | None:
        return self.nodes.get(node_id)

    async def many(self, node_ids: Collection[str]) -> dict[str, Node]:
        nodes = self.nodes
        return {n: nodes[n] for n in node_ids if n in nodes}

    async def addresses(self, node_ids: Collection[str]) -> dict[str, Node]:
        return await self.many(node_ids)

    async def all(self) -> list[Node]:
        return list(self.nodes.values())

    async def count(self) -> int:
        return len(self.nodes)

    async def heartbeat(self, node_id: str, now: float, load: Load) -> bool | None:
        node = self.nodes.get(node_id)
        if node is None:
            return None
        self.nodes[node_id] = dataclasses.replace(node, last_seen=now, load=load)
        if node_id in self.silent_set:
            self.silent_set.discard(node_id)
            return True
        return False

    async def remove(self, node_id: str) -> Node | None:
        self.silent_set.discard(node_id)
        return self.nodes.pop(node_id, None)

    async def expire(self, before: float) -> list[Node]:
        gone = [n for n in self.nodes.values() if n.last_seen < before]
        for node in gone:
            await self.remove(node.id)
        return gone

    async def silence(self, before: float) -> list[str]:
        found = [
            n.id
            for n in self.nodes.values()
            if n.last_seen < before and n.id not in self.silent_set
        ]
        self.silent_set.update(found)
        return found

    async def silent(self) -> frozenset[str]:
        return frozenset(self.silent_set)


class MemoryPeers:
    """A synchronous `tracker.peerstore.PeerStore` behind the async interface."""

    def __init__(self, store: PeerStore) -> None:
        self.store = store

    async def add_node(self, node_id: str, zone: str) -> None:
        self.store.add_node(node_id, zone)

    async def remove_node(self, node_id: str) -> dict[str, int]:
        return self.store.remove_node(node_id)

    async def hold(self, node_id: str, digest: str, complete: int, partial: int) -> int:
        return self.store.hold(node_id, digest, complete, partial)

    async def drop(self, node_id: str, digest: str) -> int:
        return self.store.drop(node_id, digest)

    async def holdings(self, node_id: str) -> dict[str, Masks]:
        return self.store.holdings(node_id)

    async def masks(self, node_id: str, digest: str) -> Masks:
        return self.store.masks(node_id, digest)

    async def masks_of(self, digest: str, node_ids: Collection[str]) -> dict[str, Masks]:
        return {n: self.store.masks(n, digest) for n in node_ids}

    async def blob_count(self, node_id: str) -> int:
        return self.store.blob_count(node_id)

    async def holders(self, digest: str) -> dict[str, Masks]:
        return self.store.holders(digest)

    async def has_blob(self, digest: str) -> bool:
        return self.store.has_blob(digest)

    async def complete_counts(self, digest: str, chunks: Sequence[int]) -> list[int]:
        return [self.store.complete_count(digest, c) for c in chunks]

    async def chunks_held(self, digest: str) -> int:
        return self.store.chunks_held(digest)

    async def handout(
        self,
        digest: str,
        chunk: int,
        requester: str,
        zone: str,
        bound: int,
        exclude: Collection[str] = (),
    ) -> list[Candidate]:
        return self.store.handout(digest, chunk, requester, zone, bound, exclude)


class MemoryLeases:
    def __init__(
        self,
        table: LeaseTable,
        members: MemoryMembers,
        peers: PeerStore,
        published: Callable[[str, int], bool],
    ) -> None:
        self.table = table
        self._members = members
        self._peers = peers
        self._published = published

    def sources(self, digest: str, chunk: int, exclude: Collection[str]) -> int:
        count = self._peers.complete_count(digest, chunk)
        if count and exclude:
            masks = self._peers.masks
            count -= sum(1 for n in exclude if masks(n, digest)[0] >> chunk & 1)
        return count

    async def grant(
        self,
        holder: str,
        digest: str,
        chunks: Sequence[int],
        now: float,
        caps: Caps,
        unconfirmed: bool = False,
        suspected: bool = False,
    ) -> list[int]:
        table = self.table
        if holder not in self._members.nodes:
            return []
        held = self._peers.masks(holder, digest)[0]
        silent = self._members.silent_set
        granted = []
        for chunk in chunks:
            if (
                table.count(holder, digest) >= caps.per_node
                or table.fetching(digest) >= caps.per_blob
                or table.fetching() >= caps.total
            ):
                break
            if (
                table.get(digest, chunk) is None
                and not held >> chunk & 1
                and self._leasable(digest, chunk, silent, unconfirmed, suspected)
            ):
                table.grant(holder, digest, chunk, now)
                granted.append(chunk)
        return granted

    def _leasable(
        self, digest: str, chunk: int, silent: Collection[str], unconfirmed: bool, suspected: bool
    ) -> bool:
        sources = self.sources(digest, chunk, silent)
        if sources == 1 and (suspected or unconfirmed):
            return suspected or not self._published(digest, chunk)
        return sources == 0

    async def get(self, digest: str, chunk: int) -> Lease | None:
        return self.table.get(digest, chunk)

    async def renew(
        self, holder: str, digest: str, chunk: int, progress: int, now: float
    ) -> Lease | None:
        return self.table.renew(holder, digest, chunk, progress, now)

    async def fetched(self, digest: str, chunk: int) -> bool:
        return self.table.fetched(digest, chunk)

    async def release(self, digest: str, chunks: Sequence[int], holder: str = "") -> list[Lease]:
        released = []
        for chunk in chunks:
            lease = self.table.get(digest, chunk)
            if lease is not None and holder in ("", lease.holder):
                self.table.release(digest, chunk)
                released.append(lease)
        return released

    async def release_holder(self, holder: str) -> list[Lease]:
        leases = self.table.held_by(holder)
        for lease in leases:
            self.table.release(lease.digest, lease.chunk)
        return leases

    async def expire(self, now: float) -> list[Lease]:
        return self.table.expire(now)

    async def fetching(self, digest: str = "") -> int:
        return self.table.fetching(digest or None)

    async def leased(self, digest: str) -> bool:
        return self.table.leased(digest)

    async def held_by(self, holder: str) -> list[Lease]:
        return self.table.held_by(holder)

    async def count(self, holder: str, digest: str) -> int:
        return self.table.count(holder, digest)

    async def all(self) -> list[Lease]:
        return list(self.table)

    async def total(self) -> int:
        return len(self.table)


class MemoryBlobs:
    def __init__(self, masks: Callable[[str, str], Masks]) -> None:
        self._masks = masks  # a node's complete and partial chunks of a blob
        self.shapes_by_digest: dict[str, tuple[int, int]] = {}
        self.metainfos: dict[str, dict[int, bytes]] = {}
        self.requesters_by_digest: dict[str, dict[str, float]] = {}  # first asked order; last
        self.requested: dict[str, set[str]] = {}  # node -> digests it asked about
        self.fanouts: dict[str, dict[int, dict[str, float]]] = {}
        self.republish_asked: dict[str, dict[int, float]] = {}
        self.watches: dict[str, dict[str, str]] = {}  # digest -> watch -> node
        self.watching: dict[str, dict[str, str]] = {}  # node -> watch -> digest
        self.watched_order: dict[str, None] = {}  # the longest watched first
        self.watched_ahead: dict[str, None] = {}  # as watched_order, and before all of it
        self.witnesses = Witnesses()

    async def shape(self, digest: str) -> tuple[int, int] | None:
        return self.shapes_by_digest.get(digest)

    async def ensure(self, digest: str, size: int, chunk_count: int) -> tuple[int, int]:
        return self.shapes_by_digest.setdefault(digest, (size, chunk_count))

    async def shapes(self) -> dict[str, tuple[int, int]]:
        return dict(self.shapes_by_digest)

    async def count(self) -> int:
        return len(self.shapes_by_digest)

    async def metainfo(self, digest: str, chunk: int) -> bytes | None:
        return self.metainfos.get(digest, {}).get(chunk)

    async def publish(self, digest: str, chunk: int, metainfo: bytes) -> bytes | None:
        known = self.metainfos.setdefault(digest, {})
        prior = known.get(chunk)
        if prior is None:
            known[chunk] = metainfo
        return prior

    async def published(self, digest: str) -> list[int]:
        return sorted(self.metainfos.get(digest, ()))

    def has_metainfo(self, digest: str, chunk: int) -> bool:
        return chunk in self.metainfos.get(digest, ())

    async def forget_metainfo(self, digest: str, chunks: Sequence[int]) -> None:
        known = self.metainfos.get(digest, {})
        for chunk in chunks:
            known.pop(chunk, None)

    async def request(
        self, digest: str, size: int, chunk_count: int, node_id: str, now: float, bound: int
    ) -> tuple[tuple[int, int], bool]:
        known = self.shapes_by_digest.get(digest, (size, chunk_count))
        asked = self.requested.get(node_id, ())
        allowed = digest in asked or len(asked) < bound
        if known == (size, chunk_count) and allowed:
            self.shapes_by_digest[digest] = known
            self.requesters_by_digest.setdefault(digest, {})[node_id] = now
            self.requested.setdefault(node_id, set()).add(digest)
        return known, allowed

    async def requesters(self, digest: str) -> list[str]:
        return list(self.requesters_by_digest.get(digest, ()))

    async def asked(self, node_id: str) -> list[str]:
        return list(self.requested.get(node_id, ()))

    async def stale_requesters(self, digest: str, before: float) -> list[str]:
        asked = self.requesters_by_digest.get(digest, {})
        return [n for n, at in asked.items() if at < before]

    async def forget_requester(self, digest: str, node_id: str) -> None:
        asked = self.requesters_by_digest.get(digest)
        if asked is not None:
            asked.pop(node_id, None)
            if not asked:
                del self.requesters_by_digest[digest]
        digests = self.requested.get(node_id)
        if digests is not None:
            digests.discard(digest)
            if not digests:
                del self.requested[node_id]

    async def fanout(self, digest: str, chunk: int) -> dict[str, float]:
        return dict(self.fanouts.get(digest, {}).get(chunk, {}))

    async def set_fanout(self, digest: str, chunk: int, members: dict[str, float]) -> None:
        chunks = self.fanouts.setdefault(digest, {})
        if members:
            chunks[chunk] = dict(members)
        else:
            chunks.pop(chunk, None)

    async def join_fanout(self, digest: str, chunk: int, node_id: str, now: float, k: int) -> bool:
        members = self.fanouts.setdefault(digest, {}).setdefault(chunk, {})
        if node_id not in members and len(members) >= k:
            return False
        members.setdefault(node_id, now)
        return True

    async def join_relay(
        self, digest: str, chunk: int, node_id: str, now: float, window: int, stale_after: float
    ) -> bool:
        chunks = self.fanouts.setdefault(digest, {})
        members = chunks.get(chunk)
        if members:
            return node_id in members
        if self._relaying(node_id, now - stale_after) >= window:
            return False
        chunks[chunk] = {node_id: now}
        return True

    def _relaying(self, node_id: str, stale_before: float) -> int:
        """Chunks the node is a fan-out member of and lacks, over the blobs it asked about;
        a membership from before `stale_before` on a chunk it holds none of does not count."""
        count = 0
        for digest in self.requested.get(node_id, ()):
            complete, partial = self._masks(node_id, digest)
            for c, m in self.fanouts.get(digest, {}).items():
                since = m.get(node_id)
                if since is None or complete >> c & 1:
                    continue
                count += since >= stale_before or bool(partial >> c & 1)
        return count

    async def leave_fanout(self, digest: str, chunk: int, node_ids: Collection[str]) -> None:
        members = self.fanouts.get(digest, {}).get(chunk)
        if members is not None:
            for node_id in node_ids:
                members.pop(node_id, None)

    async def witness(self, digest: str, chunk: int, fingerprint: str, node_id: str) -> bool:
        return self.witnesses.confirm(digest, chunk, fingerprint, node_id)

    async def ask_republish(self, digest: str, chunk: int, now: float, interval: float) -> bool:
        asked = self.republish_asked.setdefault(digest, {})
        last = asked.get(chunk)
        if last is not None and now - last < interval:
            return False
        asked[chunk] = now
        return True

    async def clear_republish(self, digest: str, chunk: int) -> None:
        self.republish_asked.get(digest, {}).pop(chunk, None)

    async def add_watch(self, digest: str, node_id: str, watch: str, ahead: bool = False) -> None:
        if digest not in self.watches:
            (self.watched_ahead if ahead else self.watched_order)[digest] = None
        self.watches.setdefault(digest, {})[watch] = node_id
        self.watching.setdefault(node_id, {})[watch] = digest

    async def remove_watch(self, digest: str, node_id: str, watch: str) -> None:
        self.watching.get(node_id, {}).pop(watch, None)
        if not self.watching.get(node_id, True):
            del self.watching[node_id]
        registrations = self.watches.get(digest, {})
        registrations.pop(watch, None)
        if not registrations:
            self.watches.pop(digest, None)
            self.watched_order.pop(digest, None)
            self.watched_ahead.pop(digest, None)

    async def watchers(self, digest: str) -> list[str]:
        return sorted(set(self.watches.get(digest, {}).values()))

    async def watched(self) -> list[str]:
        return [*self.watched_ahead, *self.watched_order]

    async def forget_node(self, node_id: str) -> set[str]:
        asked = self.requested.pop(node_id, set())
        for digest in asked:
            self.requesters_by_digest.get(digest, {}).pop(node_id, None)
            if not self.requesters_by_digest.get(digest, True):
                del self.requesters_by_digest[digest]
        watches = self.watching.pop(node_id, {})
        for watch, digest in watches.items():
            await self.remove_watch(digest, node_id, watch)
        watched = set(watches.values())
        return asked | watched

    def idle(self, digest: str) -> bool:
        return digest not in self.watches and digest not in self.requesters_by_digest

    def drop(self, digest: str) -> None:
        self.shapes_by_digest.pop(digest, None)
        self.metainfos.pop(digest, None)
        self.fanouts.pop(digest, None)
        self.republish_asked.pop(digest, None)


class MemoryRefs:
    def __init__(self) -> None:
        self.index = RefIndex()

    async def add(self, node_id: str, ref: str, digest: str) -> None:
        self.index.add(node_id, ref, digest)

    async def remove(self, node_id: str, ref: str, digest: str) -> None:
        self.index.remove(node_id, ref, digest)

    async def count(self, node_id: str) -> int:
        return self.index.count(node_id)

    async def drop_node(self, node_id: str) -> None:
        self.index.drop_node(node_id)

    async def resolve(self, ref: str) -> list[Resolution]:
        return self.index.resolve(ref)


class MemoryTasks:
    def __init__(self) -> None:
        self.board = TaskBoard()
        self.queues: dict[str, deque[Order]] = {}

    async def next_id(self, prefix: str) -> str:
        return self.board.next_id(prefix)

    async def create(
        self, image: str, targets: list[str], now: float, timeout: float
    ) -> PreheatJob:
        return self.board.create(image, targets, now, timeout)

    async def get(self, task_id: str) -> PreheatJob:
        return self.board.get(task_id)

    async def unfinished_for(self, node_id: str) -> list[PreheatJob]:
        return self.board.unfinished_for(node_id)

    async def delivered(self, node_id: str, task_id: str) -> None:
        self.board.delivered(node_id, task_id)

    async def pending(self, node_id: str, task_id: str) -> None:
        target = self.board.get(task_id).targets.get(node_id)
        if target is not None and not target.finished:
            target.state = TaskState.PENDING

    async def report(self, node_id: str, task_id: str, ok: bool, message: str, now: float) -> None:
        self.board.report(node_id, task_id, ok, message, now)

    async def node_gone(self, node_id: str, reason: str, now: float) -> None:
        self.board.node_gone(node_id, reason, now)

    async def expire(self, now: float) -> None:
        self.board.expire(now)

    async def count(self) -> int:
        return len(self.board)

    async def push(self, node_id: str, order: Order, bound: int) -> bool:
        queue = self.queues.setdefault(node_id, deque())
        if len(queue) >= bound:
            return False
        queue.append(order)
        return True

    async def pop(self, node_id: str) -> Order | None:
        queue = self.queues.get(node_id)
        if not queue:
            return None
        order = queue.popleft()
        if not queue:
            del self.queues[node_id]
        return order

    async def clear(self, node_id: str) -> None:
        self.queues.pop(node_id, None)


class MemoryReplicas:
    def __init__(self) -> None:
        self.seen: dict[str, tuple[Replica, float]] = {}

    async def beat(self, replica: Replica, ttl: float) -> None:
        self.seen[replica.instance] = (replica, replica.last_seen + ttl)

    async def live(self) -> list[Replica]:
        """This process is the only replica."""
        return sorted((r for r, _ in self.seen.values()), key=_by_address)

    async def sweeper(self, instance: str, ttl: float) -> bool:
        return True


def _by_address(replica: Replica) -> str:
    return replica.address


class MemoryStore:
    shared = False

    def __init__(self, rng: random.Random | None = None, lease_ttl: float = 10.0) -> None:
        self.members = MemoryMembers()
        self._peers = IndexedPeerStore(rng)
        self.peers = MemoryPeers(self._peers)
        self.blobs = MemoryBlobs(self._peers.masks)
        self.leases = MemoryLeases(
            LeaseTable(lease_ttl), self.members, self._peers, self.blobs.has_metainfo
        )
        self.refs = MemoryRefs()
        self.tasks = MemoryTasks()
        self.replicas = MemoryReplicas()
        self._hub: Hub | None = None
        self._id = uuid.uuid4().hex[:12]

    async def start(self, hub: Hub) -> None:
        self._hub = hub

    async def close(self) -> None:
        self._hub = None

    async def notify(self, events: Sequence[Event]) -> None:
        if self._hub is not None:
            self._hub.deliver(events)

    async def cluster_id(self) -> str:
        return self._id

    async def healthy(self) -> bool:
        return True

    async def chunk_states(
        self,
        digest: str,
        chunks: Sequence[int],
        requester: str,
        zone: str,
        bound: int,
        with_metainfo: bool,
    ) -> list[ChunkState]:
        exclude = self.members.silent_set
        metainfo = self.blobs.metainfos.get(digest, {})
        handouts = self._peers.handouts(digest, chunks, requester, zone, bound, exclude)
        lease = self.leases.table.get
        sources = self.leases.sources
        return [
            ChunkState(
                chunk,
                sources(digest, chunk, exclude),
                peers,
                lease(digest, chunk),
                chunk in metainfo,
                metainfo.get(chunk) if with_metainfo else None,
            )
            for chunk, peers in zip(chunks, handouts, strict=True)
        ]

    async def cold_chunks(
        self, digest: str, chunk_count: int, exclude: Collection[str]
    ) -> list[int]:
        lease = self.leases.table.get
        sources = self.leases.sources
        return [
            c
            for c in range(chunk_count)
            if lease(digest, c) is None and sources(digest, c, exclude) == 0
        ]

    async def candidacies(self, digest: str, node_ids: Collection[str]) -> dict[str, Candidacy]:
        table = self.leases.table
        return {
            n: Candidacy(
                table.count(n, digest), table.count_held(n), self._peers.masks(n, digest)[0]
            )
            for n in node_ids
            if n in self.members.nodes
        }

    async def fanout_context(
        self, digest: str, chunks: Sequence[int], nodes: Collection[str] = ()
    ) -> FanoutContext:
        fanouts = self.blobs.fanouts.get(digest, {})
        members = {c: dict(fanouts.get(c, {})) for c in chunks}
        requesters = list(self.blobs.requesters_by_digest.get(digest, ()))
        involved = {*nodes, *requesters, *(m for ms in members.values() for m in ms)}
        silent = self.members.silent_set
        shape = self.blobs.shapes_by_digest.get(digest)
        known = self.members.nodes
        return FanoutContext(
            shape[1] if shape else 0,
            members,
            requesters,
            {n: known[n].zone for n in involved if n in known and n not in silent},
            {n: self._peers.masks(n, digest) for n in involved},
        )

    async def fill_context(self, digest: str, exclude: str) -> FillContext | None:
        shape = self.blobs.shapes_by_digest.get(digest)
        if shape is None:
            return None
        silent = frozenset(self.members.silent_set)
        watchers = [w for w in await self.blobs.watchers(digest) if w != exclude]
        return FillContext(
            shape[1],
            self.leases.table.fetching(digest),
            self.leases.table.fetching(),
            await self.cold_chunks(digest, shape[1], silent),
            await self.candidacies(digest, watchers),
            silent,
        )

    async def drop_if_idle(self, digest: str) -> bool:
        idle = (
            self.blobs.idle(digest)
            and not self._peers.has_blob(digest)
            and not self.leases.table.leased(digest)
        )
        if idle:
            self.blobs.drop(digest)
        return idle

    async def announce(
        self, node_id: str, claims: Sequence[Claim], now: float, fanout: int, max_blobs: int = 0
    ) -> Announced:
        if node_id not in self.members.nodes:
            return Announced(member=False)
        if max_blobs and self._peers.blob_count(node_id) + len(claims) > max_blobs:
            return Announced(fit=False)
        gains, conflicts = [], {}
        for claim in claims:
            digest, shape = claim.digest, (claim.size, claim.chunk_count)
            known = self.blobs.shapes_by_digest.setdefault(digest, shape)
            if known != shape:
                conflicts[digest] = known
                continue
            newly = self._peers.hold(node_id, digest, claim.complete, claim.partial)
            if newly:
                gains.append(await self._gain(node_id, digest, indices_of(newly), now, fanout))
            if self._peers.masks(node_id, digest)[0] == (1 << claim.chunk_count) - 1:
                await self.blobs.forget_requester(digest, node_id)
        return Announced(gains=tuple(gains), conflicts=conflicts)

    async def _gain(
        self, node_id: str, digest: str, chunks: list[int], now: float, fanout: int
    ) -> Gain:
        counts = [self._peers.complete_count(digest, c) for c in chunks]
        released = await self.leases.release(digest, chunks)
        few = [c for c, count in zip(chunks, counts, strict=True) if count <= 2]
        context = await self.fanout_context(digest, few)
        relayed = []
        for chunk, count in zip(chunks, counts, strict=True):
            if count == 1:
                members = fanout_members(context.waiting(chunk, node_id), chunk, fanout)
                await self.blobs.set_fanout(digest, chunk, dict.fromkeys(members, now))
            elif count == 2:
                members = list(context.members.get(chunk, {}))
                if len(members) == 1:
                    relayed.append((chunk, members[0]))
                await self.blobs.set_fanout(digest, chunk, {})
        return Gain(digest, tuple(chunks), tuple(counts), tuple(released), tuple(relayed))

    async def reshape(self, digest: str, size: int, chunk_count: int) -> tuple[int, int] | None:
        known = self.blobs.shapes_by_digest.get(digest)
        if known is None or self._peers.has_blob(digest) or self.leases.table.leased(digest):
            return known
        self.blobs.drop(digest)
        self.blobs.shapes_by_digest[digest] = (size, chunk_count)
        return size, chunk_count
