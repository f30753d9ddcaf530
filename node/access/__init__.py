"""Access to private content: who may read which repository's manifests and blobs here."""

from node.access.checks import Access, Grant, Target
from node.access.config import AccessConfig
from node.access.seeded import SeededContent

__all__ = ["Access", "AccessConfig", "Grant", "SeededContent", "Target"]
