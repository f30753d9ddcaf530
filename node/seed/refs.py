"""Image references as archives name them, normalized the way clients ask for them.

Docker's rules: `nginx:1.25` is `docker.io/library/nginx:1.25`, `user/app` is
`docker.io/user/app:latest`, and a first component with a `.` or a `:` (or `localhost`) is a
registry host, so `ghcr.io/x/y:1` stays as it is. The registry and repository are then put in
the form the node's request path produces (`registries.canonical`, `registries.repository`), so a
seeded tag is found under the same key a pull asks for.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.errors import ReferenceInvalid
from node.oci.reference import TAG, validate_name, validate_namespace
from node.upstream.registries import DOCKER_HUB, canonical, repository


@dataclass(frozen=True, order=True)
class ImageRef:
    ns: str
    repo: str
    tag: str

    def __str__(self) -> str:
        return f"{self.ns}/{self.repo}:{self.tag}"


def is_bare_tag(text: str) -> bool:
    """`latest` or `1.25`: a tag naming no repository (what `oci:DIR:1` writes)."""
    return not any(c in text for c in "/:@") and TAG.fullmatch(text) is not None


def normalize(text: str) -> ImageRef | None:
    """The reference `text` names, or None when it is pinned by digest only (such an image is
    reachable by its digest anyway). Raises NameInvalid or ReferenceInvalid."""
    name, _, digest = text.strip().partition("@")
    tag = ""
    if name.rfind(":") > name.rfind("/"):
        name, _, tag = name.rpartition(":")
        if not tag:
            raise ReferenceInvalid("empty tag", {"reference": text})
    if not tag:
        if digest:
            return None
        tag = "latest"
    if not TAG.fullmatch(tag):
        raise ReferenceInvalid("invalid tag", {"reference": text})
    host, slash, path = name.partition("/")
    if not slash or not _is_host(host):
        host, path = DOCKER_HUB, name
    ns = canonical(validate_namespace(host))
    return ImageRef(ns, validate_name(repository(ns, path)), tag)


def _is_host(component: str) -> bool:
    return (
        "." in component
        or ":" in component
        or component == "localhost"
        or (component != component.lower())
    )
