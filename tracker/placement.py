"""Placement of a blob's chunks (DESIGN section 3): who fetches a cold chunk from upstream (its
lease), whom each requester is told to swarm from (handouts and fan-out), and which changes the
blob's watchers hear about.

Per chunk, in order:
- no complete holder: it is cold. One lease holder fetches it (FETCH); the others WAIT. A lease
  that lapses, is released, or whose holder goes moves at once to a watcher that wants it.
- one complete holder and no metainfo (the state started afresh, or the holder fetched it
  without a lease), whose metainfo that holder published in vain (no one node's is taken alone,
  `tracker.witnesses`): leased to one watcher, which fetches it; the others WAIT on the lease.
- one complete holder whose pieces a requester still says fail after the holder was asked to
  check its copy (`_ask_check`): leased to that requester, which fetches it (FETCH); the others
  swarm on, as below.
- one complete holder (the fetcher that published it, or a seeder): SWARM, but only `fanout`
  requesters (chosen rotating by chunk) are told about that single source; the others are given
  those requesters, so the source's egress feeds K streams, not N, and each other, to trade the
  pieces they got.
- one complete holder that holds the whole blob (a seed, as in a warm rollout): its egress is
  the rollout's bound, so it sends each chunk once, to one requester that relays it. Each
  requester relays one chunk of the blob at a time (SEED_WINDOW) and is given the next once it
  holds the last, so relaying is shared by all; a chunk with no relay yet WAITs for one. The
  others are given its relay and each other, as above.
- more complete holders: SWARM from a ranked handout.
- a blob of at most DIRECT_BLOB bytes (an image config): SWARM from its single source too,
  neither fanned out nor relayed.

The state is the store's, which other replicas change too: what this code reads may be stale by
the time it acts. So every decision that must hold cluster-wide is the store's own atomic step
(`Leases.grant` leases a chunk only while it is cold and unleased, `Blobs.publish` keeps the first
metainfo); what is decided here from reads (who relays, who is asked to republish, which watcher
gets a free slot) is only ever less efficient when it is stale, never wrong.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from distributed_images.recent import Recent
from tracker import limits
from tracker.errors import FailedPrecondition, InvalidArgument, MetainfoConflict
from tracker.handout import Candidate, rank
from tracker.hub import Changed, Event, Orders
from tracker.nodes import Node
from tracker.peerstore import indices_of
from tracker.policy import Policy
from tracker.store import (
    Candidacy,
    Caps,
    ChunkState,
    Claim,
    FanoutContext,
    Gain,
    Store,
)
from tracker.tasks import CheckOrder, Order, RepublishOrder

log = logging.getLogger(__name__)

MAX_REQUESTED_PER_NODE = 100_000  # blobs one node asked about in the last REQUESTER_TTL
REQUESTER_TTL = 600.0  # a requester that neither watches nor asks for this long is forgotten
MAILBOX_BOUND = 4096  # orders queued for one node
TICK_SECONDS = 0.1  # how often a call on its way lapses the leases that ran out
# Chunks of a blob one requester relays from the blob's seed at once. With 4, the requesters
# that asked first relayed every chunk and the others none (a warm rollout of 8 nodes at 2.1 S/B;
# 1.5 with one, against 2.6 when the first two requesters relayed everything).
SEED_WINDOW = 1
# A blob this small (an image config, a tiny layer) goes from its single source to everyone who
# asks: relayed, it waited for a relay of its own behind the big blobs' chunks (a 501-byte config
# arrived 11 s into a warm rollout of 128 MiB), and a thousand copies of it are a few MiB.
DIRECT_BLOB = 64 << 10
MAX_CHECKS_ASKED = 4096  # chunks (and requesters) lately asked to check, remembered
MAX_CHECKS_PER_REQUESTER = 8  # chunks one requester may have checked in a lease TTL
# Seconds a chunk's holders have to check it (half a lease TTL at most), before failures that go
# on count against its only source.
CHECK_GRACE = 2.0


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


class Notices:
    """Notifications gathered while a request changes the state, sent when it is done."""

    def __init__(self) -> None:
        self._chunks: dict[str, set[int]] = {}
        self._events: list[Event] = []

    def changed(self, digest: str, chunk: int) -> None:
        self._chunks.setdefault(digest, set()).add(chunk)

    def add(self, event: Event) -> None:
        self._events.append(event)

    def take(self) -> list[Event]:
        events: list[Event] = [Changed(d, tuple(sorted(c))) for d, c in self._chunks.items()]
        events += self._events
        self._chunks, self._events = {}, []
        return events


class Placement:
    def __init__(
        self,
        policy: Policy,
        clock: Callable[[], float],
        rng: random.Random,
        store: Store,
        notices: Notices,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.rng = rng
        self.store = store
        self.notices = notices
        self._ticked = -math.inf
        # When each chunk's holders were last asked to check it, on this replica; when each
        # requester's window of checks began, and how many it asked for in it.
        self._checks_asked: Recent[tuple[str, int], float] = Recent(MAX_CHECKS_ASKED)
        self._checks_by: Recent[str, tuple[float, int]] = Recent(MAX_CHECKS_ASKED)

    # ---- blobs ----

    async def blob(self, digest: str, size: int, chunk_count: int) -> None:
        """Record the blob (checked already) unless it is known; raise if it is known with
        another shape that someone holds or leases."""
        known = await self.store.blobs.ensure(digest, size, chunk_count)
        _same_shape(digest, await self._agreed(digest, known, size, chunk_count), size, chunk_count)

    async def _agreed(
        self, digest: str, known: tuple[int, int] | None, size: int, chunk_count: int
    ) -> tuple[int, int] | None:
        """The blob's shape once a node names it with this one. A size comes from a manifest,
        which may be wrong: a shape that no node holds or leases a chunk of yields to the next
        one named (the nodes that named it failed on it and let go), so one wrong manifest does
        not keep the blob out of the swarm; a shape that someone holds stays."""
        if known is None or known == (size, chunk_count):
            return known
        agreed = await self.store.reshape(digest, size, chunk_count)
        if agreed == (size, chunk_count):
            log.info(
                "a blob nobody held takes the shape it is named with now",
                extra={"digest": digest, "size": size, "previous_size": known[0]},
            )
        return agreed

    async def request(self, node_id: str, digest: str, size: int, chunk_count: int) -> None:
        """The node asks about the blob: check it, record it (unless known) and the node as one of
        its requesters; a rejected request leaves no trace."""
        limits.blob(digest, size, chunk_count)
        known, allowed = await self._request(node_id, digest, size, chunk_count)
        if await self._agreed(digest, known, size, chunk_count) != known:
            known, allowed = await self._request(node_id, digest, size, chunk_count)
        _same_shape(digest, known, size, chunk_count)
        if not allowed:
            raise InvalidArgument(f"a node may ask about {MAX_REQUESTED_PER_NODE} blobs at most")

    async def _request(
        self, node_id: str, digest: str, size: int, chunk_count: int
    ) -> tuple[tuple[int, int], bool]:
        return await self.store.blobs.request(
            digest, size, chunk_count, node_id, self.clock(), MAX_REQUESTED_PER_NODE
        )

    async def drop_if_idle(self, digests: Iterable[str]) -> None:
        for digest in digests:
            await self.store.drop_if_idle(digest)

    # ---- requests ----

    async def locate(
        self,
        node: Node,
        digest: str,
        size: int,
        chunk_count: int,
        chunks: Iterable[int],
        max_leases: int,
        with_metainfo: bool,
        failed: Iterable[int] = (),
    ) -> list[ChunkView]:
        limits.blob(digest, size, chunk_count)
        wanted = sorted(limits.chunk_indices(chunks, chunk_count)) or range(chunk_count)
        suspect = limits.chunk_indices(failed, chunk_count)
        await self.request(node.id, digest, size, chunk_count)
        await self.tick()
        per_node = min(max_leases, self.policy.max_leases)
        if per_node > 0:
            caps = self._caps(per_node)
            for chunk in await self.store.leases.grant(node.id, digest, wanted, self.clock(), caps):
                self.notices.changed(digest, chunk)
        states = await self.store.chunk_states(
            digest, wanted, node.id, node.zone, self.policy.max_peers, with_metainfo
        )
        views = await self._views(digest, size, chunk_count, states, node)
        await self._ask_republish(digest, size, chunk_count, states, views)
        if suspect:
            await self._ask_check(node.id, digest, size, chunk_count, states, suspect)
        return views

    async def view(
        self, node: Node, digest: str, size: int, chunk_count: int, chunks: Iterable[int]
    ) -> list[ChunkView]:
        """What Locate would show the node for these chunks, without granting anything."""
        wanted = [c for c in chunks if c < chunk_count]
        states = await self.store.chunk_states(
            digest, wanted, node.id, node.zone, self.policy.max_peers, True
        )
        return await self._views(digest, size, chunk_count, states, node)

    async def _views(
        self, digest: str, size: int, chunk_count: int, states: Sequence[ChunkState], node: Node
    ) -> list[ChunkView]:
        single = (
            []
            if _direct(size)
            else [s for s in states if s.sources == 1 and s.peers and s.peers[0].complete]
        )
        context = None
        if single:
            sources = {s.peers[0].node_id for s in single}
            chunks = [s.index for s in single]
            context = await self.store.fanout_context(digest, chunks, {node.id, *sources})
        seeding = await self._seeding(digest, chunk_count, states)
        return [await self._view(digest, state, node, context, seeding) for state in states]

    async def _seeding(
        self, digest: str, chunk_count: int, states: Sequence[ChunkState]
    ) -> set[str]:
        """The seeds of the whole blob among the complete holders these states name, while some
        chunk of the blob has no other source. Only one seed can be in that case (two would
        both hold that chunk), and its upload is the rollout's bound: it goes to the relays of
        such chunks, not to requesters of chunks that other peers hold too."""
        named = {p.node_id for s in states if s.sources >= 2 for p in s.peers if p.complete}
        if not named or chunk_count < 2:
            return set()
        # A chunk with two sources has two complete holders: only the others need counting
        # (none, when a Locate of a blob held whole asks for all of it).
        shared = {s.index for s in states if s.sources >= 2}
        rest = [c for c in range(chunk_count) if c not in shared]
        if not rest or min(await self.store.peers.complete_counts(digest, rest)) != 1:
            return set()
        full = (1 << chunk_count) - 1
        masks = await self.store.peers.masks_of(digest, named)
        return {n for n, (complete, _) in masks.items() if complete == full}

    async def renew(
        self, node_id: str, digest: str, chunk: int, progress: int, fetched: bool = False
    ) -> float | None:
        """Seconds left on the node's lease (extended when `progress` grew), or None if lost.
        A lease `fetched` no longer takes an upstream slot: the next cold chunk gets it."""
        limits.digest(digest)
        await self.tick()
        lease = await self.store.leases.renew(node_id, digest, chunk, progress, self.clock())
        if lease is None:
            return None
        if fetched and await self.store.leases.fetched(digest, chunk):
            await self.fill_slots()
        return lease.expires_at - self.clock()

    async def release(self, node_id: str, digest: str, chunks: Sequence[int]) -> None:
        """The holder gives up its leases on these chunks (its fetch failed, or its pull did):
        move them to other requesters."""
        limits.digest(digest)
        released = await self.store.leases.release(digest, chunks, holder=node_id)
        for lease in released:
            self.notices.changed(digest, lease.chunk)
        if released:
            await self.fill_slots(exclude=node_id)

    async def publish(
        self, node: Node, digest: str, size: int, chunk_count: int, chunk: int, metainfo: bytes
    ) -> None:
        limits.blob(digest, size, chunk_count)
        limits.chunk_indices((chunk,), chunk_count)
        limits.metainfo(metainfo)
        await self.blob(digest, size, chunk_count)
        known = await self.store.blobs.publish(digest, chunk, metainfo)
        if known is not None and known != metainfo:
            raise MetainfoConflict(f"{digest} chunk {chunk} was published with other metainfo")
        await self.store.blobs.clear_republish(digest, chunk)
        claim = Claim(digest, size, chunk_count, 1 << chunk, 0)
        announced = await self.store.announce(node.id, [claim], self.clock(), self.policy.fanout)
        for gain in announced.gains:
            await self.gained(gain)
        if not announced.gains and known is None:
            self.notices.changed(digest, chunk)

    async def lease_unconfirmed(self, digest: str, chunk: int, publisher: str) -> None:
        """The publisher's metainfo for the chunk waits for a second witness (`tracker.witnesses`).
        When the publisher is the chunk's only source, no other node can be that witness but by
        fetching the chunk: lease it to one of the blob's watchers, which hears FETCH on its
        watch stream, so that the cluster fetches it once rather than every requester after its
        stall timeout (the others WAIT on that lease)."""
        context = await self.store.fill_context(digest, publisher)
        if context is None or not 0 <= chunk < context.chunk_count:
            return
        holder = self._watcher_for(chunk, dict(context.candidacies), context.silent)
        if holder is None:
            return
        caps = self._caps(self.policy.max_leases)
        leases = self.store.leases
        if await leases.grant(holder, digest, [chunk], self.clock(), caps, unconfirmed=True):
            self.notices.changed(digest, chunk)

    async def distrust(self, digest: str) -> None:
        """A node pulled the blob with the metainfo known and it failed its digest check: forget
        the metainfo of every chunk nobody holds whole any more, so each is fetched anew."""
        published = await self.store.blobs.published(digest)
        counts = await self.store.peers.complete_counts(digest, published)
        unheld = [c for c, count in zip(published, counts, strict=True) if count == 0]
        await self.store.blobs.forget_metainfo(digest, unheld)
        for chunk in unheld:
            self.notices.changed(digest, chunk)

    # ---- leases ----

    async def fill_slots(self, exclude: str = "") -> None:
        """Give free upstream slots to cold chunks: the longest watched blob first, its chunks
        in order, each to one of the blob's watchers, which hears FETCH on its watch stream. So
        nodes never poll for a lease, and the blobs of an image arrive one after another, in
        the order clients ask for them, rather than all together at the end."""
        if await self.store.leases.fetching() >= self.policy.upstream_leases:
            return
        for digest in await self.store.blobs.watched():
            if not await self._fill_blob(digest, exclude):
                return

    async def _fill_blob(self, digest: str, exclude: str) -> bool:
        """Lease the blob's cold chunks to its watchers while slots are free; False once the
        cluster's slots are all taken."""
        store, policy = self.store, self.policy
        context = await store.fill_context(digest, exclude)
        if context is None:
            return True
        if context.fetching >= policy.upstream_leases:
            return False
        if context.fetching_blob >= policy.blob_leases or not context.cold:
            return True
        candidacies = dict(context.candidacies)
        caps = self._caps(policy.max_leases)
        for chunk in context.cold:
            holder = self._watcher_for(chunk, candidacies, context.silent)
            if holder is None:
                continue
            if not await store.leases.grant(holder, digest, [chunk], self.clock(), caps):
                # A cap is reached, or another replica leased the chunk first.
                if await store.leases.fetching() >= policy.upstream_leases:
                    return False
                if await store.leases.fetching(digest) >= policy.blob_leases:
                    return True
                continue
            self.notices.changed(digest, chunk)
            was = candidacies[holder]
            candidacies[holder] = Candidacy(was.leases_on_blob + 1, was.leases + 1, was.complete)
        return True

    def _caps(self, per_node: int) -> Caps:
        """The bounds on a lease granted now: `per_node` leases for the holder on the blob, and
        the policy's on the blob and on the cluster's upstream fetches."""
        return Caps(per_node, self.policy.blob_leases, self.policy.upstream_leases)

    def _watcher_for(
        self, chunk: int, candidacies: dict[str, Candidacy], silent: Collection[str]
    ) -> str | None:
        """The watcher to fetch a cold chunk: among those under their lease cap, one that has
        not missed a heartbeat (a node that died holds no lease, so it would look least busy
        until it expires), then the one fetching least, rotating by chunk among equals."""
        cap = self.policy.max_leases
        candidates = sorted(
            n
            for n, c in candidacies.items()
            if c.leases_on_blob < cap and not c.complete >> chunk & 1
        )
        if not candidates:
            return None
        start = chunk % len(candidates)
        rotated = candidates[start:] + candidates[:start]
        return min(rotated, key=lambda n: (n in silent, candidacies[n].leases))

    async def silence(self, node_id: str) -> None:
        """The member missed heartbeats (the store marked it silent): its chunks are placed as if
        it were gone, and its leases move on (were it only slow, its fetch still lands: the same
        bytes publish the same metainfo)."""
        for lease in await self.store.leases.release_holder(node_id):
            self.notices.changed(lease.digest, lease.chunk)
        await self._holdings_changed(node_id)
        await self.fill_slots()

    async def heard(self, node_id: str) -> None:
        """A silent member heartbeated again: it is a source once more, and the leases given
        meanwhile on chunks it holds whole end (a chunk with a source is not fetched)."""
        for digest, (complete, _) in (await self.store.peers.holdings(node_id)).items():
            await self.store.leases.release(digest, indices_of(complete))
        await self._holdings_changed(node_id)
        await self.fill_slots()

    async def _holdings_changed(self, node_id: str) -> None:
        for digest, (complete, partial) in (await self.store.peers.holdings(node_id)).items():
            for chunk in indices_of(complete | partial):
                self.notices.changed(digest, chunk)

    async def tick(self, always: bool = False) -> None:
        """Lapse the leases whose time ran out and move them on: at most every TICK_SECONDS on
        a call's way (a lease lapses that much later at worst), each time from the sweeper."""
        now = self.clock()
        if not always and now - self._ticked < TICK_SECONDS:
            return
        self._ticked = now
        for lease in await self.store.leases.expire(now):
            self.notices.changed(lease.digest, lease.chunk)
            await self.fill_slots(exclude=lease.holder)

    # ---- views and fan-out ----

    async def _view(
        self,
        digest: str,
        state: ChunkState,
        node: Node,
        context: FanoutContext | None,
        seeding: Collection[str] = (),
    ) -> ChunkView:
        """`seeding`: a seed of the whole blob that is still the only source of some chunk
        (`_seeding`), left out where other peers hold the chunk whole."""
        chunk, metainfo, peers = state.index, state.metainfo, state.peers
        lease = state.lease
        # A lease on a chunk with a source: the source's metainfo awaits a witness, or its pieces
        # fail their hash (`_ask_check`); the lease holder fetches it, the others swarm on.
        if state.sources == 0 or (
            lease is not None and (not state.published or lease.holder == node.id)
        ):
            if lease is None:
                return ChunkView(chunk, Directive.WAIT, metainfo, peers)
            directive = Directive.FETCH if lease.holder == node.id else Directive.WAIT
            left = max(0.0, lease.expires_at - self.clock())
            return ChunkView(chunk, directive, metainfo, peers, lease.holder, left)
        if context is not None and state.sources == 1 and peers and peers[0].complete:
            if _holds_all(context, peers[0].node_id):
                return await self._from_seed(digest, chunk, node, peers, metainfo, context)
            peers = await self._fan_out(digest, chunk, node, peers, context)
        elif seeding:
            others = [p for p in peers if p.node_id not in seeding]
            if any(p.complete for p in others):
                peers = others
        return ChunkView(chunk, Directive.SWARM, metainfo, peers)

    async def _from_seed(
        self,
        digest: str,
        chunk: int,
        node: Node,
        peers: list[Candidate],
        metainfo: bytes | None,
        context: FanoutContext,
    ) -> ChunkView:
        """The chunk's only source is a seed of the whole blob: one requester, its relay, gets
        it from the seed, and the others from the relay. A requester becomes the relay of a
        chunk that has none while it relays fewer than SEED_WINDOW chunks of the blob; until
        a chunk has its relay, the others WAIT, and hear of the relay on their watch streams."""
        members = await self._fanout_members(digest, chunk, context)
        if not members:
            now = self.clock()
            if await self._join_relay(digest, chunk, node.id, now):
                members = {node.id: now}
                self.notices.changed(digest, chunk)
        if node.id in members:
            relayed = self._relayed(chunk, node, peers, members, context)
            return ChunkView(chunk, Directive.SWARM, metainfo, relayed)
        if not members:
            return ChunkView(chunk, Directive.WAIT, metainfo, [])
        partial = [p for p in peers[1:] if not p.complete]
        relays = [Candidate(m, context.zones[m], False) for m in members if m in context.zones]
        handout = rank(node.id, node.zone, [*partial, *relays], self.policy.max_peers, self.rng)
        handout += self._fellows(chunk, node, peers[0].node_id, handout, context)
        return ChunkView(chunk, Directive.SWARM, metainfo, handout)

    async def _next_relay(self, digest: str, after: int, node_id: str) -> None:
        """A relay's chunk from a seed is held whole by a requester (the relay, or another that
        traded its pieces): make the relay the relay of the next chunk that has none and that
        it lacks, of this blob or else of another one it is pulling, so its window stays full."""
        if not await self._relay_next_in(digest, after, node_id):
            await self._relay_elsewhere(node_id, digest)

    async def _relay_elsewhere(self, node_id: str, digest: str) -> None:
        """Make the node the relay of the next chunk without one of a blob it pulls, but this."""
        for other in sorted(await self.store.blobs.asked(node_id)):
            if other != digest and await self._relay_next_in(other, -1, node_id):
                return

    async def gave_up(self, node_id: str, digest: str) -> None:
        """The node stopped pulling the blob (its pull failed): it is no longer one of its
        requesters, so a chunk of it that it was to relay no longer holds its relaying window
        (nor the chunk's other requesters) until the membership goes stale; it relays a chunk
        of another blob it pulls instead. (A node that holds the whole blob, withdrawing it as
        it evicts it, asks for nothing: there is nothing to do.)"""
        if node_id not in await self.store.blobs.requesters(digest):
            return
        await self.store.blobs.forget_requester(digest, node_id)
        await self._relay_elsewhere(node_id, digest)

    async def _relay_next_in(self, digest: str, after: int, node_id: str) -> bool:
        """Make the node the relay of the first chunk of the blob after `after` (round) that has
        none, that it lacks, and whose only source is a seed of the blob; True if it became one,
        or its window is full."""
        shape = await self.store.blobs.shape(digest)
        if shape is None or _direct(shape[0]):
            return False
        count = shape[1]
        order = [(after + step) % count for step in range(1, count + 1)]
        states = await self.store.chunk_states(digest, order, node_id, "", 1, False)
        seeded = [s for s in states if s.sources == 1 and s.peers and s.peers[0].complete]
        if not seeded:
            return False
        sources = {s.peers[0].node_id for s in seeded}
        context = await self.store.fanout_context(
            digest, [s.index for s in seeded], {node_id, *sources}
        )
        holds = context.masks.get(node_id, (0, 0))[0]
        for state in seeded:
            chunk = state.index
            if holds >> chunk & 1 or context.members.get(chunk):
                continue
            if not _holds_all(context, state.peers[0].node_id):
                continue
            now = self.clock()
            if await self._join_relay(digest, chunk, node_id, now):
                self.notices.changed(digest, chunk)
            return True
        return False

    async def _join_relay(self, digest: str, chunk: int, node_id: str, now: float) -> bool:
        """Make the node the chunk's relay if its window has room. A relaying it never started
        (it holds nothing of that chunk past the lease TTL) frees its place, as it does among
        the chunk's members (`_fanout_members`)."""
        stale_after = self.policy.lease_ttl
        return await self.store.blobs.join_relay(
            digest, chunk, node_id, now, SEED_WINDOW, stale_after
        )

    async def _fan_out(
        self,
        digest: str,
        chunk: int,
        node: Node,
        peers: list[Candidate],
        context: FanoutContext,
    ) -> list[Candidate]:
        """While `peers[0]` is the chunk's only source, only `fanout` requesters are told about it;
        the others get those requesters instead, and other requesters to trade with (`_fellows`).

        A requester's connection to a relay that has not added the chunk's torrent yet is
        refused, and libtorrent tries again only a second later; so a relay is also told of the
        requesters it relays to, and whichever of two nodes adds the torrent last connects to
        the one that added it first."""
        source = peers[0].node_id
        members = await self._fanout_members(digest, chunk, context)
        k, bound = self.policy.fanout, self.policy.max_peers
        if node.id in members or (
            len(members) < k
            and await self.store.blobs.join_fanout(digest, chunk, node.id, self.clock(), k)
        ):
            return self._relayed(chunk, node, peers, members, context)
        partial = [p for p in peers if p.node_id != source]
        relays = [Candidate(m, context.zones[m], False) for m in members if m != node.id]
        handout = rank(node.id, node.zone, [*partial, *relays], bound, self.rng)
        return handout + self._fellows(chunk, node, source, handout, context)

    def _fellows(
        self,
        chunk: int,
        node: Node,
        source: str,
        handout: list[Candidate],
        context: FanoutContext,
    ) -> list[Candidate]:
        """Other requesters waiting for a chunk whose only source is relayed, to fill the
        handout of a requester that does not relay it. Its relays forward each piece to every
        requester; requesters that know each other also trade the pieces they got, so the
        relays' uplinks are not all that forwards the chunk (a relay that took the chunk from
        the source faster than it could forward it to all the others held the rollout back)."""
        room = self.policy.max_peers - len(handout)
        if room <= 0 or not context.requesters:
            return []
        skip = {source, node.id, *(p.node_id for p in handout)}
        start = self.rng.randrange(len(context.requesters))
        fellows = context.some_waiting(chunk, skip, room, start)
        return [Candidate(r, context.zones[r], False) for r in fellows]

    def _relayed(
        self,
        chunk: int,
        node: Node,
        peers: list[Candidate],
        members: dict[str, float],
        context: FanoutContext,
    ) -> list[Candidate]:
        """A fan-out member's handout: the source, and the requesters it relays to."""
        bound = self.policy.max_peers
        known = {p.node_id for p in peers} | members.keys() | {node.id}
        waiting = context.some_waiting(chunk, known, bound - len(peers), 0)
        relayed = [Candidate(r, context.zones[r], False) for r in waiting]
        return [*peers, *relayed][:bound]

    async def _fanout_members(
        self, digest: str, chunk: int, context: FanoutContext
    ) -> dict[str, float]:
        """The chunk's fan-out members, without those that died, went silent (the others would
        wait on them until they expire), never started swarming, or gave up the blob."""
        members = context.members.get(chunk, {})
        now = self.clock()
        gone = [
            m
            for m, since in members.items()
            if m not in context.zones
            or (
                not context.held(m, chunk, partial=True)
                and (now - since > self.policy.lease_ttl or m not in context.requesters)
            )
        ]
        if gone:
            await self.store.blobs.leave_fanout(digest, chunk, gone)
        return {m: since for m, since in members.items() if m not in gone}

    async def _ask_republish(
        self,
        digest: str,
        size: int,
        chunk_count: int,
        states: Sequence[ChunkState],
        views: Sequence[ChunkView],
    ) -> None:
        """Chunks with sources but no metainfo (the state started afresh): ask two holders to
        publish, since the metainfo of a node without the lease is taken once a second one
        publishes the same (`tracker.witnesses`)."""
        asks: dict[str, list[int]] = {}
        for state, view in zip(states, views, strict=True):
            if view.directive is not Directive.SWARM or state.published:
                continue
            holders = [p.node_id for p in view.peers if p.complete][:2]
            if not holders or not await self.store.blobs.ask_republish(
                digest, view.index, self.clock(), self.policy.lease_ttl
            ):
                continue
            for holder in holders:
                asks.setdefault(holder, []).append(view.index)
        for holder, chunks in asks.items():
            task_id = await self.store.tasks.next_id("republish")
            await self.order(
                holder, RepublishOrder(task_id, digest, size, chunk_count, tuple(chunks))
            )

    async def _ask_check(
        self,
        requester: str,
        digest: str,
        size: int,
        chunk_count: int,
        states: Sequence[ChunkState],
        failed: Collection[int],
    ) -> None:
        """Chunks whose pieces failed their hash at the requester, from the peers it was given:
        their complete holders are asked to hash their copies (a disk can damage a chunk behind
        its holder's back, and a peer cannot tell which holder sent the bad piece), at most once
        a lease TTL for each chunk, and for at most MAX_CHECKS_PER_REQUESTER chunks a requester
        names in that time: a requester's word costs a holder that much hashing. Only a
        holder's own check makes it withdraw the chunk. A chunk whose only source was asked
        to check it CHECK_GRACE ago, and whose pieces fail all the same (the source lies, or
        cannot tell), is leased to the requester, as a cold one would be: the cluster fetches
        it once, rather than each requester after its stall timeout."""
        now, ttl = self.clock(), self.policy.lease_ttl
        grace = min(CHECK_GRACE, ttl / 2)
        since, taken = self._checks_by.get(requester) or (now, 0)
        if now - since >= ttl:
            since, taken = now, 0
        asks: dict[str, list[int]] = {}
        persisting = []
        for state in states:
            if state.index not in failed:
                continue
            key = (digest, state.index)
            asked = self._checks_asked.get(key)
            if asked is not None and now - asked < ttl:
                if now - asked >= grace and state.sources == 1 and state.lease is None:
                    persisting.append(state.index)
                continue
            if taken >= MAX_CHECKS_PER_REQUESTER:
                break
            taken += 1
            self._checks_asked.remember(key, now)
            for peer in state.peers:
                if peer.complete:
                    asks.setdefault(peer.node_id, []).append(state.index)
        self._checks_by.remember(requester, (since, taken))
        for holder, chunks in asks.items():
            task_id = await self.store.tasks.next_id("check")
            await self.order(holder, CheckOrder(task_id, digest, size, chunk_count, tuple(chunks)))
        if persisting:
            caps = self._caps(self.policy.max_leases)
            leases = self.store.leases
            for chunk in await leases.grant(
                requester, digest, persisting, now, caps, suspected=True
            ):
                log.info(
                    "the only source of a chunk sends pieces that fail their hash; leased",
                    extra={"digest": digest, "chunk": chunk, "node": requester},
                )
                self.notices.changed(digest, chunk)

    async def order(self, node_id: str, order: Order) -> bool:
        """Queue an order for the node's Tasks stream; False when its queue is full."""
        if not await self.store.tasks.push(node_id, order, MAILBOX_BOUND):
            return False
        self.notices.add(Orders(node_id))
        return True

    # ---- chunk events ----

    async def gained(self, gain: Gain) -> None:
        """A node now holds `gain.chunks` complete, and the store did its part
        (`Store.announce`): tell the watchers of the chunks with few sources, move the upstream
        slots that ended leases freed, and give a relay from a seed its next chunk."""
        digest = gain.digest
        if gain.released:
            await self.fill_slots()
        for chunk, relay in gain.relayed:
            await self._next_relay(digest, chunk, relay)
        for chunk, count in zip(gain.chunks, gain.counts, strict=True):
            if count <= 2:
                self.notices.changed(digest, chunk)

    async def lost(self, digest: str, chunks: Sequence[int]) -> None:
        """A node no longer holds these chunks complete."""
        counts = await self.store.peers.complete_counts(digest, chunks)
        cold = False
        for chunk, count in zip(chunks, counts, strict=True):
            if count == 0:
                await self.store.blobs.set_fanout(digest, chunk, {})
                cold = True
            if count <= 1:
                self.notices.changed(digest, chunk)
        if cold:
            await self.fill_slots()

    # ---- departures and expiry ----

    async def node_gone(self, node_id: str, lost: dict[str, int], keep_leases: bool) -> None:
        """Undo a departed node's part: its watches, requests, leases and lost chunks. The node
        is no longer a member (or is one anew); `lost` are the chunks it held complete."""
        released = [] if keep_leases else await self.store.leases.release_holder(node_id)
        asked = await self.store.blobs.forget_node(node_id)
        for digest, mask in lost.items():
            await self.lost(digest, indices_of(mask))
        for lease in released:
            self.notices.changed(lease.digest, lease.chunk)
        await self.fill_slots(exclude=node_id)
        await self.drop_if_idle({*asked, *lost, *(lease.digest for lease in released)})

    async def prune(self, now: float) -> None:
        """Forget requesters that neither watch nor asked lately, and blobs left with nothing."""
        for digest in await self.store.blobs.shapes():
            watching = set(await self.store.blobs.watchers(digest))
            for node_id in await self.store.blobs.stale_requesters(digest, now - REQUESTER_TTL):
                if node_id not in watching:
                    await self.store.blobs.forget_requester(digest, node_id)
            await self.store.drop_if_idle(digest)


def _same_shape(digest: str, known: tuple[int, int] | None, size: int, chunk_count: int) -> None:
    if known is not None and known != (size, chunk_count):
        raise FailedPrecondition(
            f"{digest} is known as {known[0]} bytes in {known[1]} chunks,"
            f" not {size} in {chunk_count}"
        )


def _direct(size: int) -> bool:
    """Whether a blob this size goes from its single source to every requester (DIRECT_BLOB)."""
    return size <= DIRECT_BLOB


def _holds_all(context: FanoutContext, node_id: str) -> bool:
    """Whether the node holds every chunk of the blob (a seed of it)."""
    full = (1 << context.chunk_count) - 1
    return context.chunk_count > 0 and context.masks.get(node_id, (0, 0))[0] == full
