from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from node.errors import NameInvalid, RegistryNotMirrored
from node.upstream.auth import MAX_TOKENS, Authenticator, Challenge, Credentials
from node.upstream.registries import Registries, Upstream, is_loopback_host, parse_mapping


def test_docker_hub_official_images_live_under_library() -> None:
    hub = Registries([], "docker.io").resolve(None)
    assert hub.base_url == "https://registry-1.docker.io"
    assert hub.repository("nginx") == "library/nginx"
    assert hub.repository("bitnami/nginx") == "bitnami/nginx"
    assert Upstream("ghcr.io", "https://ghcr.io").repository("nginx") == "nginx"


def test_namespace_mapping_and_defaults() -> None:
    registries = Registries(["myreg.internal=http://127.0.0.1:5999/"], "myreg.internal")
    assert registries.resolve(None).base_url == "http://127.0.0.1:5999"
    assert registries.resolve("myreg.internal").configured is True
    assert registries.resolve("ghcr.io").base_url == "https://ghcr.io"
    assert registries.resolve("ghcr.io").configured is False
    assert registries.resolve("index.docker.io").ns == "docker.io"
    assert registries.resolve("Quay.IO").ns == "quay.io"


def test_a_registry_the_node_is_not_configured_for_is_not_mirrored() -> None:
    registries = Registries(["myreg.internal=http://127.0.0.1:5999"], "docker.io", ["ghcr.io"])
    for ns in ("127.0.0.1:5000", "169.254.169.254", "quay.io", "myreg.internal:5000"):
        with pytest.raises(RegistryNotMirrored):
            registries.resolve(ns)
    with pytest.raises(NameInvalid):
        registries.resolve("a" * 30 + "!")
    mirrored = {u.ns for u in registries.upstreams()}
    assert mirrored == {"myreg.internal", "docker.io", "ghcr.io"}


def test_a_default_registry_without_a_url_is_reached_at_its_name() -> None:
    registries = Registries([], "127.0.0.1:5000", [])
    assert registries.resolve(None) == Upstream("127.0.0.1:5000", "http://127.0.0.1:5000", True)
    assert registries.resolve("127.0.0.1:5000").configured is True
    assert Registries([], "docker.io").resolve(None).configured is False


@pytest.mark.parametrize("text", ["nourl", "ns=ftp://x", "=http://x"])
def test_bad_mappings(text: str) -> None:
    with pytest.raises(ValueError):
        parse_mapping(text)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1:5000", True), ("localhost", True), ("[::1]:5000", True), ("10.0.0.1", False)],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_bearer_challenge_parsing() -> None:
    challenge = Challenge.parse(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull,push"'
    )
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull,push",
    }
    assert Challenge.parse('Basic realm="x"').scheme == "basic"


def test_credentials_are_used_only_for_the_registry_they_name(tmp_path: Path) -> None:
    auth = base64.b64encode(b"alice:s3cret").decode()
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "auths": {
                    "127.0.0.1:5000": {"auth": auth},
                    "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
                    "broken.example": {"auth": "!!!"},
                }
            }
        )
    )
    credentials = Credentials.load(path)
    assert credentials.for_upstream(Upstream("127.0.0.1:5000", "http://127.0.0.1:5000")) == (
        "alice",
        "s3cret",
    )
    assert credentials.for_upstream(Upstream("docker.io", "https://registry-1.docker.io")) == (
        "bob",
        "pw",
    )
    assert credentials.for_upstream(Upstream("127.0.0.1:6000", "http://127.0.0.1:6000")) is None
    assert credentials.for_upstream(Upstream("broken.example", "https://broken.example")) is None
    assert (
        Credentials.load(tmp_path / "missing.json").for_upstream(Upstream("x", "https://x")) is None
    )


class _TokenResponse:
    status = 200

    async def json(self, content_type: object = None) -> dict[str, object]:
        return {"token": "t", "expires_in": 300}

    async def __aenter__(self) -> _TokenResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


class _TokenService:
    """Stands in for the HTTP session that asks a token service: it issues a token per scope."""

    def __init__(self) -> None:
        self.asked = 0

    def get(self, url: str, **kwargs: object) -> _TokenResponse:
        self.asked += 1
        return _TokenResponse()


async def test_tokens_for_client_chosen_repositories_are_kept_for_a_bounded_number() -> None:
    authenticator = Authenticator(Credentials())
    upstream = Upstream("docker.io", "https://registry-1.docker.io")
    service = _TokenService()
    challenge = 'Bearer realm="https://auth.example/token",service="registry"'
    scopes = [f"repository:client/repo{i}:pull" for i in range(MAX_TOKENS + 100)]
    for scope in scopes:
        header = f'{challenge},scope="{scope}"'
        assert await authenticator.answer(service, upstream, scope, header) == "Bearer t"  # type: ignore[arg-type]
    assert authenticator.cached(upstream, scopes[-1]) == "Bearer t"
    assert authenticator.cached(upstream, scopes[0]) is None  # the oldest are forgotten
    assert service.asked == len(scopes)


@pytest.mark.parametrize(
    "document",
    [
        [],
        5,
        {"auths": 5},
        {"auths": []},
        {"auths": {"127.0.0.1:5000": {"auth": 5}}},
        {"auths": {"127.0.0.1:5000": {"username": 5, "password": ["pw"]}}},
        {"auths": {"127.0.0.1:5000": "alice:pw"}},
    ],
)
def test_an_auth_file_of_another_shape_is_ignored_not_a_crash(
    tmp_path: Path, document: object
) -> None:
    """JSON, but not a Docker config.json: the node ended with a traceback at start."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    credentials = Credentials.load(path)
    assert credentials.for_upstream(Upstream("127.0.0.1:5000", "http://127.0.0.1:5000")) is None
