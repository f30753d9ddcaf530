"""Seeding the images directory: `docker save` archives, OCI archives and layouts become
pullable images on this node (and, announced to the tracker, on every node of the cluster)."""

from __future__ import annotations

from node.seed.config import SeedConfig
from node.seed.seeds import Seeds

__all__ = ["SeedConfig", "Seeds"]
