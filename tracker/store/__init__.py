"""The tracker's state behind one interface (DESIGN section 11).

Two implementations pass one conformance suite: `tracker.store.memory.MemoryStore` keeps the state
in this process (the default: `make run`, the embedded mode, one tracker) and
`tracker.store.redisstore.RedisStore` keeps it in Redis, so that any number of tracker replicas
serve one cluster as one tracker.

Invariant: each method is one atomic step on the state. The decisions that must hold cluster-wide
are made inside the store, never from a read followed by a write: `Leases.grant` leases a chunk
only if it has no lease, no source that is not silent, and the holder is a member under its caps;
`Blobs.publish` keeps the first metainfo of a chunk; `Members.expire` and `Members.silence` act
once however many replicas sweep; `Leases.expire` lapses each lease once. Between two calls the
state may change (another replica, or a concurrent RPC of this one); the placement code is written
for that. In memory, no method suspends, so each call runs whole before the next begins.

Time is the caller's: every method that needs the time takes `now`, so tests drive expiry by hand
and replicas agree as far as their clocks do.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tracker.handout import Candidate
from tracker.hub import Event, Hub
from tracker.leases import Lease
from tracker.nodes import Load, Node
from tracker.peerstore import Masks
from tracker.refs import Resolution
from tracker.tasks import Order, PreheatJob


@dataclass(frozen=True)
class Caps:
    """How many leases a grant may bring about: on the blob held by the holder, and fetching from
    upstream on the blob and on all blobs (cluster-wide)."""

    per_node: int
    per_blob: int
    total: int


@dataclass(frozen=True)
class ChunkState:
    """What a Locate or a Watch event shows of one chunk to one requester."""

    index: int
    sources: int  # complete holders, the silent ones aside
    peers: list[Candidate]  # ranked handout for the requester
    lease: Lease | None
    published: bool
    metainfo: bytes | None  # when published and asked for


@dataclass(frozen=True)
class Candidacy:
    """A blob's watcher as a candidate lease holder."""

    leases_on_blob: int
    leases: int
    complete: int  # mask of the blob's chunks it holds whole


@dataclass(frozen=True)
class FanoutContext:
    """What fan-out decisions read of a blob, in one go: its chunk count (0: unknown), each
    chunk's fan-out members (member -> since), the blob's requesters in arrival order, and, for
    every node among them and those asked about, its zone (only for members that are not silent:
    the others are nobody's relay) and what it holds."""

    chunk_count: int
    members: dict[int, dict[str, float]]
    requesters: list[str]
    zones: dict[str, str]
    masks: dict[str, Masks]

    def held(self, node_id: str, chunk: int, partial: bool = False) -> bool:
        complete, partly = self.masks.get(node_id, (0, 0))
        return bool((complete | (partly if partial else 0)) >> chunk & 1)

    def waiting(self, chunk: int, source: str) -> list[str]:
        """The blob's requesters, in arrival order, that lack the chunk (the source aside) and
        have not missed their heartbeats."""
        return [r for r in self.requesters if r != source and self._lacks(r, chunk)]

    def some_waiting(self, chunk: int, skip: Collection[str], bound: int, start: int) -> list[str]:
        """At most `bound` of those `waiting` for the chunk, but those in `skip`: in arrival
        order from the `start`th requester on, round, so that however many asked, the look is
        short and different askers are given different ones."""
        found: list[str] = []
        count = len(self.requesters)
        for step in range(count if bound > 0 else 0):
            r = self.requesters[(start + step) % count]
            if r not in skip and self._lacks(r, chunk):
                found.append(r)
                if len(found) == bound:
                    break
        return found

    def _lacks(self, node_id: str, chunk: int) -> bool:
        return node_id in self.zones and not self.held(node_id, chunk)


@dataclass(frozen=True)
class Claim:
    """Chunks of one blob that a node announces: masks of those held whole, and of those held
    in part (none of them whole)."""

    digest: str
    size: int
    chunk_count: int
    complete: int
    partial: int


@dataclass(frozen=True)
class Gain:
    """What one claim changed: the chunks the node now holds whole and did not before, with
    each one's whole holders afterwards; the leases on them that ended; and those of them, now
    at two whole holders, that had one fan-out member, with that member (a relay from a seed:
    the node, or one that another requester beat to the whole chunk; either way its window is
    free, and its next chunk to relay is the caller's to find)."""

    digest: str
    chunks: tuple[int, ...]
    counts: tuple[int, ...]
    released: tuple[Lease, ...] = ()
    relayed: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Announced:
    """What `Store.announce` did. Nothing changed unless the node is a `member` whose blobs
    `fit` the bound; `conflicts` are the claimed blobs known with another shape (digest ->
    shape), left out."""

    member: bool = True
    fit: bool = True
    gains: tuple[Gain, ...] = ()
    conflicts: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class FillContext:
    """What giving a blob's free upstream slots to its watchers reads, in one go."""

    chunk_count: int
    fetching_blob: int
    fetching: int
    cold: list[int]  # chunks without lease and without a source that is not silent, in order
    candidacies: dict[str, Candidacy]  # the watchers that are members
    silent: frozenset[str]


@dataclass(frozen=True)
class Replica:
    instance: str
    address: str
    last_seen: float
    started_at: float


class Members(Protocol):
    async def join(self, node: Node, max_nodes: int) -> tuple[Node, Node | None]:
        """Add or replace the member; returns it (with its new epoch) and the record it replaced.
        Raises FailedPrecondition when the cluster is full and the node is new."""
        ...

    async def get(self, node_id: str) -> Node | None: ...

    async def many(self, node_ids: Collection[str]) -> dict[str, Node]: ...

    async def addresses(self, node_ids: Collection[str]) -> dict[str, Node]:
        """As `many`, but the records may be a few seconds old (a replica keeps them a while)
        and need hold only the addresses (registry, peer, zone): for handing peers out, not for
        their heartbeats, load or epoch."""
        ...

    async def all(self) -> list[Node]: ...

    async def count(self) -> int: ...

    async def heartbeat(self, node_id: str, now: float, load: Load) -> bool | None:
        """None when the node is unknown; else whether it was silent (and is now heard)."""
        ...

    async def remove(self, node_id: str) -> Node | None:
        """Forget the member (not its holdings); returns what was forgotten."""
        ...

    async def expire(self, before: float) -> list[Node]:
        """Forget the members last seen before `before`; each is returned to one caller only."""
        ...

    async def silence(self, before: float) -> list[str]:
        """Mark silent the members last seen before `before` and not silent yet; returns them."""
        ...

    async def silent(self) -> frozenset[str]: ...


class Peers(Protocol):
    """Who holds which chunk (see `tracker.peerstore` for the rules and the in-memory twins)."""

    async def add_node(self, node_id: str, zone: str) -> None: ...

    async def remove_node(self, node_id: str) -> dict[str, int]: ...

    async def hold(self, node_id: str, digest: str, complete: int, partial: int) -> int: ...

    async def drop(self, node_id: str, digest: str) -> int: ...

    async def holdings(self, node_id: str) -> dict[str, Masks]: ...

    async def masks(self, node_id: str, digest: str) -> Masks: ...

    async def masks_of(self, digest: str, node_ids: Collection[str]) -> dict[str, Masks]: ...

    async def blob_count(self, node_id: str) -> int: ...

    async def holders(self, digest: str) -> dict[str, Masks]: ...

    async def has_blob(self, digest: str) -> bool: ...

    async def complete_counts(self, digest: str, chunks: Sequence[int]) -> list[int]: ...

    async def chunks_held(self, digest: str) -> int: ...

    async def handout(
        self,
        digest: str,
        chunk: int,
        requester: str,
        zone: str,
        bound: int,
        exclude: Collection[str] = (),
    ) -> list[Candidate]: ...


class Leases(Protocol):
    """Leases on cold chunks (see `tracker.leases` for the rules)."""

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
        """Lease to `holder`, in order, each chunk that has no lease and no source that is not
        silent (with `unconfirmed`, also one with a single such source and no metainfo: that
        source's metainfo is not taken alone, `tracker.witnesses`; with `suspected`, also one
        with a single such source whatever its metainfo: that source's pieces fail their hash),
        and that the holder does not hold whole, while `caps` allow; the holder must be a
        member. Returns the chunks leased."""
        ...

    async def get(self, digest: str, chunk: int) -> Lease | None: ...

    async def renew(
        self, holder: str, digest: str, chunk: int, progress: int, now: float
    ) -> Lease | None: ...

    async def fetched(self, digest: str, chunk: int) -> bool: ...

    async def release(self, digest: str, chunks: Sequence[int], holder: str = "") -> list[Lease]:
        """End the leases on these chunks (only those of `holder`, when given)."""
        ...

    async def release_holder(self, holder: str) -> list[Lease]: ...

    async def expire(self, now: float) -> list[Lease]: ...

    async def fetching(self, digest: str = "") -> int:
        """Leases whose range is still coming in: on the blob, or on any when no digest."""
        ...

    async def leased(self, digest: str) -> bool: ...

    async def held_by(self, holder: str) -> list[Lease]: ...

    async def count(self, holder: str, digest: str) -> int: ...

    async def all(self) -> list[Lease]: ...

    async def total(self) -> int: ...


class Blobs(Protocol):
    """Blobs the cluster asks about: shape, metainfo, requesters, fan-out, watches."""

    async def shape(self, digest: str) -> tuple[int, int] | None: ...

    async def ensure(self, digest: str, size: int, chunk_count: int) -> tuple[int, int]:
        """The blob's shape, recorded as given unless it was known already."""
        ...

    async def shapes(self) -> dict[str, tuple[int, int]]: ...

    async def count(self) -> int: ...

    async def metainfo(self, digest: str, chunk: int) -> bytes | None: ...

    async def publish(self, digest: str, chunk: int, metainfo: bytes) -> bytes | None:
        """Record the chunk's metainfo unless some is known; returns what was known."""
        ...

    async def published(self, digest: str) -> list[int]: ...

    async def forget_metainfo(self, digest: str, chunks: Sequence[int]) -> None: ...

    async def request(
        self, digest: str, size: int, chunk_count: int, node_id: str, now: float, bound: int
    ) -> tuple[tuple[int, int], bool]:
        """The node asks about the blob: unless the blob is known with another shape, or the node
        asks about `bound` other blobs already (then nothing changes), record the blob (unless
        known) and the node among its requesters. Returns the blob's shape as known and whether
        the node may ask."""
        ...

    async def requesters(self, digest: str) -> list[str]:
        """In the order they first asked."""
        ...

    async def asked(self, node_id: str) -> list[str]:
        """The blobs the node asked about and is still a requester of, in no order."""
        ...

    async def stale_requesters(self, digest: str, before: float) -> list[str]: ...

    async def forget_requester(self, digest: str, node_id: str) -> None: ...

    async def fanout(self, digest: str, chunk: int) -> dict[str, float]: ...

    async def set_fanout(self, digest: str, chunk: int, members: dict[str, float]) -> None: ...

    async def join_fanout(self, digest: str, chunk: int, node_id: str, now: float, k: int) -> bool:
        """Make the node a fan-out member unless `k` members are there; True if it is one."""
        ...

    async def leave_fanout(self, digest: str, chunk: int, node_ids: Collection[str]) -> None: ...

    async def join_relay(
        self, digest: str, chunk: int, node_id: str, now: float, window: int, stale_after: float
    ) -> bool:
        """Make the node the chunk's one fan-out member (its relay from a seed) unless the chunk
        has members, or the node is a member of `window` chunks that it does not hold whole yet,
        over all the blobs it asked about: a node's upload is shared by all its relaying, so
        the cluster's relaying is spread over as many requesters as there are chunks to relay.
        A membership older than `stale_after` on a chunk the node holds nothing of (it never
        started, or gave up) does not count. True if it is the chunk's relay."""
        ...

    async def witness(self, digest: str, chunk: int, fingerprint: str, node_id: str) -> bool:
        """Whether another node already published metainfo with this fingerprint for the chunk
        (then it is forgotten); otherwise it waits for a second witness (`tracker.witnesses`)."""
        ...

    async def ask_republish(self, digest: str, chunk: int, now: float, interval: float) -> bool:
        """True (and noted) unless a republish of the chunk was asked less than `interval` ago."""
        ...

    async def clear_republish(self, digest: str, chunk: int) -> None: ...

    async def add_watch(self, digest: str, node_id: str, watch: str, ahead: bool = False) -> None:
        """A Watch stream of the node on the blob opened; `watch` names it: `<replica>:<n>`.
        The blob joins `watched` after those watched before it, or, `ahead`, after only the
        other blobs watched `ahead`."""
        ...

    async def remove_watch(self, digest: str, node_id: str, watch: str) -> None: ...

    async def watchers(self, digest: str) -> list[str]:
        """Nodes that watch the blob through a live replica."""
        ...

    async def watched(self) -> list[str]:
        """Blobs someone watches, the longest watched first."""
        ...

    async def forget_node(self, node_id: str) -> set[str]:
        """Forget the node's requests and watches; returns the blobs they were on."""
        ...


class Refs(Protocol):
    """Seeded image references (see `tracker.refs`)."""

    async def add(self, node_id: str, ref: str, digest: str) -> None: ...

    async def remove(self, node_id: str, ref: str, digest: str) -> None: ...

    async def count(self, node_id: str) -> int: ...

    async def drop_node(self, node_id: str) -> None: ...

    async def resolve(self, ref: str) -> list[Resolution]: ...


class Tasks(Protocol):
    """Preheat jobs (see `tracker.tasks`) and each node's queue of work orders."""

    async def next_id(self, prefix: str) -> str: ...

    async def create(
        self, image: str, targets: list[str], now: float, timeout: float
    ) -> PreheatJob: ...

    async def get(self, task_id: str) -> PreheatJob: ...

    async def unfinished_for(self, node_id: str) -> list[PreheatJob]: ...

    async def delivered(self, node_id: str, task_id: str) -> None: ...

    async def pending(self, node_id: str, task_id: str) -> None:
        """The order is to be sent again (the node restarted)."""
        ...

    async def report(
        self, node_id: str, task_id: str, ok: bool, message: str, now: float
    ) -> None: ...

    async def node_gone(self, node_id: str, reason: str, now: float) -> None: ...

    async def expire(self, now: float) -> None: ...

    async def count(self) -> int: ...

    async def push(self, node_id: str, order: Order, bound: int) -> bool:
        """Queue an order for the node's Tasks stream; False when its queue is full."""
        ...

    async def pop(self, node_id: str) -> Order | None: ...

    async def clear(self, node_id: str) -> None: ...


class Replicas(Protocol):
    async def beat(self, replica: Replica, ttl: float) -> None: ...

    async def live(self) -> list[Replica]:
        """The replicas that beat within their `ttl` (by the store's clock, when shared)."""
        ...

    async def sweeper(self, instance: str, ttl: float) -> bool:
        """Whether this replica sweeps (expiry, lapses, pruning) now: one at a time."""
        ...


class Store(Protocol):
    @property
    def members(self) -> Members: ...

    @property
    def peers(self) -> Peers: ...

    @property
    def leases(self) -> Leases: ...

    @property
    def blobs(self) -> Blobs: ...

    @property
    def refs(self) -> Refs: ...

    @property
    def tasks(self) -> Tasks: ...

    @property
    def replicas(self) -> Replicas: ...

    @property
    def shared(self) -> bool:
        """Whether other processes share this state."""
        ...

    async def start(self, hub: Hub) -> None:
        """Deliver notifications to `hub` from now on (from every replica, when shared)."""
        ...

    async def close(self) -> None: ...

    async def notify(self, events: Sequence[Event]) -> None:
        """Send notifications to the hub of every replica (this one included)."""
        ...

    async def cluster_id(self) -> str:
        """Names the state: it changes when the state starts afresh."""
        ...

    async def healthy(self) -> bool: ...

    async def chunk_states(
        self,
        digest: str,
        chunks: Sequence[int],
        requester: str,
        zone: str,
        bound: int,
        with_metainfo: bool,
    ) -> list[ChunkState]:
        """Each chunk as `requester` (in `zone`) would be shown it; silent members are no
        source and nobody's peer."""
        ...

    async def cold_chunks(
        self, digest: str, chunk_count: int, exclude: Collection[str]
    ) -> list[int]:
        """The blob's chunks, in order, without lease and without a source outside `exclude`."""
        ...

    async def candidacies(self, digest: str, node_ids: Collection[str]) -> dict[str, Candidacy]:
        """The members among `node_ids`, each with its leases and what it holds of the blob."""
        ...

    async def fanout_context(
        self, digest: str, chunks: Sequence[int], nodes: Collection[str] = ()
    ) -> FanoutContext: ...

    async def fill_context(self, digest: str, exclude: str) -> FillContext | None:
        """None when the blob is unknown; its watchers but `exclude` are the candidates."""
        ...

    async def drop_if_idle(self, digest: str) -> bool:
        """Forget the blob if nobody watches, asks about, holds or leases it."""
        ...

    async def announce(
        self, node_id: str, claims: Sequence[Claim], now: float, fanout: int, max_blobs: int = 0
    ) -> Announced:
        """A node's announcement, as one step. Nothing changes unless the node is a member and
        holds at most `max_blobs` blobs with each claim counted as a new one (0: no bound).
        Then, per claim: a blob known with another shape is left out; otherwise the blob is
        recorded unless known and the node holds the chunks claimed. Of the chunks it now holds
        whole and did not before, the leases end; each with one whole holder now gets its
        fan-out members (`tracker.handout.fanout_members` of those waiting for it, as of
        `now`), each with two loses them. A node that now holds every chunk of the blob is no
        longer one of its requesters."""
        ...

    async def reshape(self, digest: str, size: int, chunk_count: int) -> tuple[int, int] | None:
        """Give the known blob this shape, forgetting what was known of its chunks (metainfo,
        fan-outs, republish asks), unless a node holds or leases any of them; its watchers and
        requesters stay. The shape it has afterwards; None when the blob is unknown."""
        ...
