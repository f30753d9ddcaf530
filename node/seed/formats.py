"""Which format an archive is in, told by its metadata files, and the plan of its import."""

from __future__ import annotations

from node.seed.dockersave import read_docker_save
from node.seed.errors import ArchiveInvalid
from node.seed.layout import read_layout
from node.seed.plan import Plan
from node.seed.sources import Contents


def read_plan(contents: Contents, archive: str) -> Plan:
    """An OCI layout when there is an `index.json` (Docker 25's `docker save` has both), else
    a legacy `docker save` archive when there is a `manifest.json`."""
    if contents.has("index.json"):
        return read_layout(contents, archive)
    if contents.has("manifest.json"):
        return read_docker_save(contents, archive)
    raise ArchiveInvalid("not an image archive: neither index.json nor manifest.json")
