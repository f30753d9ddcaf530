"""Manifest media types and what a client's Accept header allows."""

from __future__ import annotations

import json

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_TAR_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)


def accepted(accept_headers: list[str]) -> list[str]:
    """The manifest media types a client accepts, in its order; every manifest type when it
    names none (or `*/*`). Only these are passed on upstream, whatever else the client sent."""
    named: dict[str, None] = {}  # ordered, and a lookup per item: linear in the headers
    for header in accept_headers:
        for item in header.split(","):
            named[item.partition(";")[0].strip()] = None
    types = [t for t in named if t in MANIFEST_TYPES]
    if not types or "*/*" in named:
        return [*types, *(t for t in MANIFEST_TYPES if t not in types)]
    return types


def sniff(body: bytes) -> str:
    """The media type a manifest declares, or infers from its shape (for stores without one)."""
    try:
        document = json.loads(body)
    except ValueError:
        return "application/octet-stream"
    if not isinstance(document, dict):
        return "application/octet-stream"
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    return OCI_INDEX if "manifests" in document else OCI_MANIFEST
