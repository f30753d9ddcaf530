"""What the tracker keeps of each member node."""

from __future__ import annotations

from dataclasses import dataclass, field

from tracker.mailbox import Mailbox, Watcher
from tracker.tasks import Order

MAILBOX_BOUND = 4096


@dataclass(frozen=True)
class Load:
    """Load figures a node reports with each heartbeat."""

    uploads: int = 0
    downloads: int = 0
    upload_bytes_per_second: int = 0
    download_bytes_per_second: int = 0
    store_bytes: int = 0


@dataclass(eq=False)
class Node:
    id: str
    instance: str  # random per node process: tells a restart from a rejoin
    registry: str
    peer: str
    zone: str
    joined_at: float
    last_seen: float
    load: Load = Load()
    requested: set[str] = field(default_factory=set)  # digests it located or watches
    watchers: set[Watcher] = field(default_factory=set)
    mailbox: Mailbox[Order] = field(default_factory=lambda: Mailbox(MAILBOX_BOUND))
