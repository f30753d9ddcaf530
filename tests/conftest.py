"""Fixtures over `tests.support`: real registries, images, clients and nodes, all on loopback.

Every process a fixture starts is stopped at teardown, and its log tail is printed when the test
failed. Temporary directories are removed even after a failure (the log tails are the record).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.support import images, outcome
from tests.support.containerd import Containerd
from tests.support.fakeupstream import FakeUpstream
from tests.support.node import Node, node_available
from tests.support.podman import Podman
from tests.support.redisserver import RedisServer
from tests.support.registry import Registry
from tests.support.tokenserver import TokenRegistry

# Property tests check what the code does, not how fast: the suite shares its machine, and speed
# is measured by the benchmarks. A test that bounds time on purpose (the parsers' linear-time
# fuzzing) sets its own deadline.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    outcome.record(item, report)
    return report


@pytest.fixture(scope="session")
def workspace() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="di-tests-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def workdir(workspace: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A directory for this test only, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"{request.node.name[5:29]}-", dir=workspace))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def test_images(workspace: Path) -> images.TestImages:
    return images.build_test_images(workspace / "images")


@pytest.fixture(scope="session")
def session_upstream(workspace: Path, test_images: images.TestImages) -> Iterator[Registry]:
    registry = Registry(workspace / "upstream", name="upstream")
    try:
        registry.start()
        for image, reference in test_images.pushes():
            images.push(image, registry.host, reference)
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def docker_image(session_upstream: Registry, test_images: images.TestImages) -> images.DockerPush:
    """`test_images.docker` on the session's upstream as a Docker manifest list, tag 1."""
    reference = f"{images.TestImages.DOCKER}:{images.TestImages.TAG}"
    return images.push_as_docker(test_images.docker, session_upstream.host, reference)


@pytest.fixture
def upstream(session_upstream: Registry, request: pytest.FixtureRequest) -> Iterator[Registry]:
    """The session's plain upstream registry, holding every test image (`TestImages.pushes`).
    A failed test prints the requests it received during that test."""
    mark = session_upstream.mark()
    yield session_upstream
    if outcome.failed(request):
        print(f"--- upstream requests during the test ({session_upstream.log_path}) ---")
        for entry in session_upstream.entries(since=mark):
            print(entry)


@pytest.fixture
def registry_factory(
    workdir: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Registry]]:
    """Registries of this test only (to stop one, or to make a pull-through cache)."""
    started: list[Registry] = []

    def start(**kwargs: Any) -> Registry:
        registry = Registry(workdir / f"registry{len(started)}", **kwargs)
        started.append(registry)
        registry.start()
        return registry

    yield start
    for registry in started:
        if outcome.failed(request):
            print(registry.log_tail())
        registry.stop()


@pytest.fixture(scope="session")
def token_upstream(workspace: Path, test_images: images.TestImages) -> Iterator[TokenRegistry]:
    """A registry behind token auth (and its token server); the app image is pushed to both its
    public and its private repository, tag 1."""
    setup = TokenRegistry(workspace / "token-upstream")
    try:
        registry = setup.start()
        for repository in (setup.public, setup.private):
            images.push(test_images.app, registry.host, f"{repository}:1", creds=setup.creds)
        yield setup
    finally:
        setup.stop()


@pytest.fixture(scope="session")
def node_command() -> None:
    assert node_available(), "`distributed-images node` does not run"


@pytest.fixture
def node_factory(
    node_command: None, workdir: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Node]]:
    """Start real nodes: `node_factory(registries={ns: url}, default=ns, ...)` (see `Node`)."""
    started: list[Node] = []

    def start(registries: dict[str, str], default: str, **kwargs: Any) -> Node:
        node = Node(workdir / f"node{len(started)}", registries, default, **kwargs)
        started.append(node)
        node.start()
        return node

    yield start
    for node in started:
        code = node.stop()
        if outcome.failed(request):
            print(f"{node.name} exited with {code}")
            print(node.log_tail())


@pytest.fixture
def node(node_factory: Callable[..., Node], upstream: Registry) -> Node:
    """A fresh node (empty cache) whose default registry is the session's upstream."""
    return node_factory({upstream.host: upstream.url}, upstream.host)


@pytest.fixture(scope="session")
def session_node(node_command: None, workspace: Path, session_upstream: Registry) -> Iterator[Node]:
    upstream = session_upstream
    node = Node(workspace / "session-node", {upstream.host: upstream.url}, upstream.host)
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.fixture
def shared_node(session_node: Node, request: pytest.FixtureRequest) -> Iterator[Node]:
    """One node for the whole session, for tests to which its cache makes no difference (bad
    requests, headers); it starts once, where a fresh node costs seconds."""
    yield session_node
    if outcome.failed(request):
        print(session_node.log_tail())


@pytest.fixture
def containerd(workdir: Path, request: pytest.FixtureRequest) -> Iterator[Containerd]:
    daemon = Containerd(workdir / "containerd")
    try:
        daemon.start()
        yield daemon
    finally:
        if outcome.failed(request):
            print(daemon.log_tail())
        daemon.stop()


@pytest.fixture
def podman(workdir: Path) -> Iterator[Podman]:
    client = Podman(workdir / "podman")
    yield client
    client.close()


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(workspace: Path) -> Iterator[RedisServer]:
    """Debian's redis-server on a free loopback port, for the whole session; tests that use it
    start from an empty database (`tests.support.stores`)."""
    server = RedisServer(workspace / "redis")
    try:
        server.start()
        yield server
    finally:
        server.stop()
