"""The JSON documents of an archive (indexes, manifests, configs, docker save's manifest.json),
parsed with their shape checked: a malformed document is reported as such, never a KeyError."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from node.errors import DigestInvalid
from node.oci.reference import validate_digest
from node.seed.errors import ArchiveInvalid, ArchiveUnsupported


def parse(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:  # RecursionError: nested too deep
        raise ArchiveInvalid(f"{what} is not valid JSON: {e}") from None


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ArchiveInvalid(f"{what} is not a JSON object")
    return value


def json_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ArchiveInvalid(f"{what} is not a JSON list")
    return value


def json_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ArchiveInvalid(f"{what} is not a string")
    return value


def strings(value: Any, what: str) -> list[str]:
    return [json_str(item, what) for item in json_list(value, what)]


def digest_of(value: Any, what: str) -> str:
    text = json_str(value, what)
    try:
        return validate_digest(text)
    except DigestInvalid as e:
        raise ArchiveUnsupported(f"{what}: {e.message}", {"digest": text[:200]}) from None


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: Any, what: str) -> Descriptor:
        document = json_object(value, what)
        size = document.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ArchiveInvalid(f"{what} has no valid size")
        annotations = json_object(document.get("annotations", {}), f"{what} annotations")
        return cls(
            media_type=json_str(document.get("mediaType", ""), f"{what} mediaType"),
            digest=digest_of(document.get("digest"), f"{what} digest"),
            size=size,
            annotations={str(k): str(v) for k, v in annotations.items()},
            urls=tuple(strings(document.get("urls", []), f"{what} urls")),
        )
