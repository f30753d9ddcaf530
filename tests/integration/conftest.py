"""Fixtures of the peer-to-peer tests: two images on an upstream of their own, and real clusters.

The images are built and pushed once per session; each test starts its own tracker and nodes
with empty stores, so every test begins cold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import images, outcome
from tests.support.cluster import Cluster
from tests.support.images import KiB, LayerSpec, MiB, OciImage
from tests.support.registry import Registry


@dataclass(frozen=True)
class P2PImages:
    """big:   a layer of 256 MiB (33 chunks of 8 MiB, the last one short), one of 24 MiB
              (7 chunks of 4 MiB), a small gzip layer and the config (one chunk each);
    small: a 12 MiB layer (4 chunks), a small gzip layer and the config."""

    big: OciImage
    small: OciImage

    BIG = "p2p/big:1"
    SMALL = "p2p/small:1"


@pytest.fixture(scope="session")
def p2p_images(workspace: Path) -> P2PImages:
    directory = workspace / "p2p-images"
    return P2PImages(
        big=images.build_image(
            directory / "big",
            "1",
            [LayerSpec(256 * MiB), LayerSpec(24 * MiB), LayerSpec(700 * KiB, gzip=True)],
            seed="p2p-big",
        ),
        small=images.build_image(
            directory / "small",
            "1",
            [LayerSpec(12 * MiB), LayerSpec(300 * KiB, gzip=True)],
            seed="p2p-small",
        ),
    )


@pytest.fixture(scope="session")
def p2p_upstream(workspace: Path, p2p_images: P2PImages) -> Iterator[Registry]:
    """A registry of its own, so its access log holds nothing but these tests' requests."""
    registry = Registry(workspace / "p2p-upstream", name="p2p-upstream")
    try:
        registry.start()
        images.push(p2p_images.big, registry.host, P2PImages.BIG)
        images.push(p2p_images.small, registry.host, P2PImages.SMALL)
        yield registry
    finally:
        registry.stop()


@pytest.fixture
def start_cluster(
    workdir: Path, p2p_upstream: Registry, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Cluster]]:
    """`start_cluster(size=4, node_args={i: [flags]}, data_dirs={i: path}, tracker_args=[flags],
    upstream_url=URL, seeders=[i], replicas=1, store=URL)`: a tracker (or `replicas` of them
    sharing the store) and `size` nodes, all joined, whose default registry is `p2p_upstream`
    (reached at `upstream_url`, its own URL unless given), nodes `seeders` with the seeder role.
    Stopped at teardown; logs printed on failure."""
    started: list[Cluster] = []

    def start(
        size: int = 4,
        node_args: Mapping[int, Sequence[str]] | None = None,
        data_dirs: Mapping[int, Path] | None = None,
        tracker_args: Sequence[str] = (),
        upstream_url: str | None = None,
        seeders: Sequence[int] = (),
        replicas: int = 1,
        store: str | None = None,
    ) -> Cluster:
        upstream = p2p_upstream
        cluster = Cluster(
            workdir / f"cluster{len(started)}",
            {upstream.host: upstream_url or upstream.url},
            upstream.host,
            size=size,
            node_args=node_args,
            data_dirs=data_dirs,
            tracker_args=tracker_args,
            seeders=seeders,
            replicas=replicas,
            store=store,
        )
        started.append(cluster)
        cluster.start()
        return cluster

    mark = p2p_upstream.mark()
    yield start
    for cluster in started:
        cluster.stop()
        if outcome.failed(request):
            print(cluster.log_tails(120))
    if outcome.failed(request):
        print(f"--- upstream requests during the test ({p2p_upstream.log_path}) ---")
        for entry in p2p_upstream.entries(since=mark):
            print(entry)
