"""What the tracker keeps of each member node."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Load:
    """Load figures a node reports with each heartbeat."""

    uploads: int = 0
    downloads: int = 0
    upload_bytes_per_second: int = 0
    download_bytes_per_second: int = 0
    store_bytes: int = 0


@dataclass(frozen=True)
class Node:
    id: str
    instance: str  # random per node process: tells a restart from a rejoin
    registry: str
    peer: str
    zone: str
    joined_at: float
    last_seen: float
    load: Load = Load()
    # Set by the store at each join, higher every time: the streams a node opened before it
    # joined again (or was forgotten) are told apart from those it opens after.
    epoch: int = 0
