"""The tracker's tunables (each one a flag of `distributed-images tracker`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Policy:
    heartbeat_interval: float = field(
        default=5.0,
        metadata={"above": 0, "help": "seconds between a node's heartbeats", "metavar": "S"},
    )
    node_ttl: float = field(
        default=15.0,
        metadata={"above": 0, "help": "forget a node after this long silent", "metavar": "S"},
    )
    # A node that died is a chunk source nobody can reach until it expires; after a missed
    # heartbeat or so its chunks are placed as if it were gone. Too short, and a node that is
    # only slow has its chunks fetched from upstream again.
    silent_after: float = field(
        default=7.5,
        metadata={
            "help": "a node this long without a heartbeat is no chunk's source until heard"
            " again (0: only when it expires)",
            "metavar": "S",
        },
    )
    lease_ttl: float = field(
        default=10.0,
        metadata={
            "above": 0,
            "help": "a lease lapses after this long without progress",
            "metavar": "S",
        },
    )
    max_peers: int = field(
        default=20, metadata={"min": 1, "help": "peers per chunk handout", "metavar": "N"}
    )
    fanout: int = field(
        default=2,
        metadata={
            "min": 1,
            "help": "requesters given a chunk's single source (DESIGN 3)",
            "metavar": "K",
        },
    )
    max_leases: int = field(
        default=4, metadata={"min": 1, "help": "leases one node may hold per blob", "metavar": "N"}
    )
    # Few chunks of a cold blob in flight from upstream at once, in order: each arrives fast and
    # spreads through the swarm while the next ones are fetched (many at once would all finish
    # late, together, and only then spread).
    blob_leases: int = field(
        default=3,
        metadata={
            "min": 1,
            "help": "leases held at once on one blob, cluster-wide",
            "metavar": "N",
        },
    )
    # The cluster's upstream traffic, in order: the longest watched blob's chunks get free slots
    # first, so an image's layers arrive one after another as its clients ask for them.
    upstream_leases: int = field(
        default=3,
        metadata={
            "min": 1,
            "help": "leases held at once on all blobs, cluster-wide",
            "metavar": "N",
        },
    )
    preheat_timeout: float = field(
        default=3600.0, metadata={"above": 0, "help": "default preheat deadline", "metavar": "S"}
    )
