"""Seeded tags are normalized the way clients ask for them, and the precedence setting is
checked where it is read."""

from __future__ import annotations

import pytest

from node.errors import NameInvalid, ReferenceInvalid
from node.seed.config import SeedConfig, parse_precedence
from node.seed.refs import ImageRef, is_bare_tag, normalize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nginx:1.25", "docker.io/library/nginx:1.25"),
        ("nginx", "docker.io/library/nginx:latest"),
        ("docker.io/nginx:1", "docker.io/library/nginx:1"),
        ("index.docker.io/library/nginx:1", "docker.io/library/nginx:1"),
        ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
        ("ghcr.io/x/y:1", "ghcr.io/x/y:1"),
        ("GHCR.IO/x/y:1", "ghcr.io/x/y:1"),
        ("localhost/app:2", "localhost/app:2"),
        ("127.0.0.1:5000/test/app:1", "127.0.0.1:5000/test/app:1"),
        ("quay.io/org/app:v1.2_rc-3", "quay.io/org/app:v1.2_rc-3"),
        ("app:1@sha256:" + "a" * 64, "docker.io/library/app:1"),
    ],
)
def test_references_are_normalized(text: str, expected: str) -> None:
    assert str(normalize(text)) == expected


def test_a_normalized_ref_is_keyed_as_the_request_path_resolves_it() -> None:
    assert normalize("nginx:1.25") == ImageRef("docker.io", "library/nginx", "1.25")
    assert normalize("127.0.0.1:5000/app") == ImageRef("127.0.0.1:5000", "app", "latest")


def test_a_reference_pinned_by_digest_only_names_no_tag() -> None:
    assert normalize("nginx@sha256:" + "b" * 64) is None


@pytest.mark.parametrize("text", ["Nginx:1", "app:", "app:-x", "a//b:1", "app:1:2"])
def test_invalid_references_are_refused(text: str) -> None:
    with pytest.raises((NameInvalid, ReferenceInvalid)):
        normalize(text)


def test_bare_tags_name_no_repository() -> None:
    assert is_bare_tag("1.25") and is_bare_tag("latest")
    assert not is_bare_tag("nginx:1") and not is_bare_tag("x/y") and not is_bare_tag("-x")


def test_precedence_setting() -> None:
    assert SeedConfig().seed_first
    assert not SeedConfig(seed_precedence=parse_precedence("Upstream-First")).seed_first
    with pytest.raises(ValueError, match="seed-first or upstream-first"):
        parse_precedence("random")
