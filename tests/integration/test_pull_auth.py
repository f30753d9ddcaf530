"""Pulls through a node from an upstream behind token auth (distribution's Bearer token flow)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.support import skopeo
from tests.support.images import OCI_MANIFEST, TestImages
from tests.support.node import Node, write_auth_file
from tests.support.process import CommandFailed
from tests.support.registry import Registry
from tests.support.tokenserver import TokenRegistry

pytestmark = pytest.mark.integration


@pytest.fixture
def node_for(
    node_factory: Callable[..., Node], token_upstream: TokenRegistry
) -> Callable[..., Node]:
    """A node on the token registry, with the credentials (user, password) given, if any."""
    registry = token_upstream.registry
    assert registry is not None

    def start(workdir: Path, credentials: tuple[str, str] | None = None) -> Node:
        auth = None
        if credentials:
            auth = write_auth_file(workdir / "config.json", {registry.host: credentials})
        return node_factory({registry.host: registry.url}, registry.host, auth_file=auth)

    return start


def _registry(token_upstream: TokenRegistry) -> Registry:
    assert token_upstream.registry is not None
    return token_upstream.registry


async def _get_manifest(node: Node, name: str) -> tuple[int, dict[str, object]]:
    headers = {"Accept": OCI_MANIFEST}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{node.url}/v2/{name}/manifests/1", headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


def test_anonymous_node_pulls_the_public_repository(
    node_for: Callable[..., Node],
    token_upstream: TokenRegistry,
    test_images: TestImages,
    workdir: Path,
) -> None:
    node = node_for(workdir)
    mark = _registry(token_upstream).mark()
    out = skopeo.pull(node.host, f"{token_upstream.public}:1", workdir / "out")
    assert skopeo.verify_dir(out) == test_images.app.image().blobs
    assert skopeo.manifest_digest(out) == test_images.app.digest
    fetched = _registry(token_upstream).blob_bytes_written(since=mark)
    assert fetched == test_images.app.image().blob_bytes
    anonymous = [r for r in token_upstream.tokens.requests_snapshot() if r.account is None]
    assert any(f"repository:{token_upstream.public}:pull" in r.scopes for r in anonymous)


async def test_anonymous_node_is_refused_the_private_repository(
    node_for: Callable[..., Node], token_upstream: TokenRegistry, workdir: Path
) -> None:
    node = node_for(workdir)
    status, body = await _get_manifest(node, token_upstream.private)
    assert status == 401, body
    assert _codes(body) == ["UNAUTHORIZED"], body


def test_node_with_credentials_pulls_the_private_repository(
    node_for: Callable[..., Node],
    token_upstream: TokenRegistry,
    test_images: TestImages,
    workdir: Path,
) -> None:
    node = node_for(workdir, (token_upstream.user, token_upstream.password))
    out = skopeo.pull(node.host, f"{token_upstream.private}:1", workdir / "out")
    assert skopeo.verify_dir(out) == test_images.app.image().blobs
    assert skopeo.manifest_digest(out) == test_images.app.digest
    users = {r.account for r in token_upstream.tokens.requests_snapshot() if r.status == 200}
    assert token_upstream.user in users


async def test_node_with_a_wrong_password_reports_unauthorized(
    node_for: Callable[..., Node], token_upstream: TokenRegistry, workdir: Path
) -> None:
    node = node_for(workdir, (token_upstream.user, "not-the-password"))
    status, body = await _get_manifest(node, token_upstream.private)
    assert status == 401, body
    assert _codes(body) == ["UNAUTHORIZED"], body
    refused = [r for r in token_upstream.tokens.requests_snapshot() if r.status == 401]
    assert refused, "the node never presented its credentials to the token server"


def test_skopeo_pull_of_a_private_image_through_an_anonymous_node_fails(
    node_for: Callable[..., Node], token_upstream: TokenRegistry, workdir: Path
) -> None:
    node = node_for(workdir)
    with pytest.raises(CommandFailed, match=r"(?i)unauthorized|authentication required"):
        skopeo.pull(node.host, f"{token_upstream.private}:1", workdir / "out")


def _codes(body: object) -> list[str]:
    assert isinstance(body, dict) and isinstance(body.get("errors"), list), body
    return [str(e.get("code")) for e in body["errors"]]
