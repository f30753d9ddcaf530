"""A manifest is served or kept only if it is one: a JSON object of schema version 2, of a known
manifest or index media type, shaped as that type is, each descriptor in it well formed.

What an upstream or a peer sends as a manifest is otherwise any bytes that match their digest:
an HTML error page, a document of a type no client of this node reads, a body shaped to make a
client or this node misbehave. It is checked once, before it is stored; what the store holds as
a manifest was checked.
"""

from __future__ import annotations

import json
from typing import Any

from node.errors import ManifestInvalid
from node.oci import mediatypes
from node.oci.reference import DIGEST


def check_manifest(body: bytes, content_type: str | None = None) -> str:
    """The media type of a manifest or index: the one it declares, else the upstream's
    Content-Type when that is a manifest type, else the one its shape shows. ManifestInvalid
    when it is neither a manifest nor an index."""
    document = _json_object(body)
    version = document.get("schemaVersion")
    if version != 2 or isinstance(version, bool):
        raise ManifestInvalid("not a schema 2 manifest", {"schemaVersion": str(version)[:20]})
    declared = document.get("mediaType")
    if declared is not None and declared not in mediatypes.MANIFEST_TYPES:
        raise ManifestInvalid("not a manifest type this node serves", {"mediaType": _cut(declared)})
    media_type = declared or _manifest_type(content_type) or _shape(document)
    if media_type in mediatypes.INDEX_TYPES:
        _descriptors(document, "manifests")
    else:
        _descriptor(document.get("config"), "config")
        _descriptors(document, "layers")
    return str(media_type)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        raise ManifestInvalid("not JSON") from None
    if not isinstance(document, dict):
        raise ManifestInvalid("not a JSON object")
    return document


def _manifest_type(content_type: str | None) -> str | None:
    return content_type if content_type in mediatypes.MANIFEST_TYPES else None


def _shape(document: dict[str, Any]) -> str:
    return mediatypes.OCI_INDEX if "manifests" in document else mediatypes.OCI_MANIFEST


def _descriptors(document: dict[str, Any], key: str) -> None:
    entries = document.get(key)
    if not isinstance(entries, list):
        raise ManifestInvalid(f"{key} is not a list")
    for entry in entries:
        _descriptor(entry, key)


def _descriptor(entry: object, where: str) -> None:
    """A content descriptor: a digest, a size, and a media type if it names one."""
    if not isinstance(entry, dict):
        raise ManifestInvalid(f"a descriptor in {where} is not an object")
    digest, size, media_type = entry.get("digest"), entry.get("size"), entry.get("mediaType")
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise ManifestInvalid(f"a descriptor in {where} has no valid digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"a descriptor in {where} has no valid size", {"digest": digest})
    if media_type is not None and not isinstance(media_type, str):
        raise ManifestInvalid(f"a descriptor in {where} has no valid media type")


def _cut(value: object) -> str:
    return str(value)[:200]
