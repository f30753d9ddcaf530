"""Access to private content: who may read which repository's manifests and blobs here."""

from node.access.checks import Access, Target
from node.access.config import AccessConfig

__all__ = ["Access", "AccessConfig", "Target"]
