"""The test infrastructure itself: real clients pull straight from the real registries.

If one of these fails, every node test that uses the same part would fail for a reason that has
nothing to do with the node; these say which part is broken.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import skopeo
from tests.support.containerd import Containerd, write_hosts_toml
from tests.support.images import TestImages, push
from tests.support.podman import Podman
from tests.support.process import CommandFailed, wait_until
from tests.support.registry import Registry
from tests.support.tokenserver import TokenRegistry

pytestmark = pytest.mark.integration


def test_skopeo_pulls_every_image_with_matching_digests(
    upstream: Registry, test_images: TestImages, workdir: Path
) -> None:
    for image, reference in test_images.pushes():
        for platform in image.images:
            out = workdir / f"{reference}-{platform.platform.architecture}".replace("/", "_")
            skopeo.pull(upstream.host, reference, out, arch=platform.platform.architecture)
            assert skopeo.verify_dir(out) == platform.blobs
            assert skopeo.manifest_digest(out) == platform.digest


def test_access_log_counts_blob_fetches_and_bytes(
    upstream: Registry, test_images: TestImages, workdir: Path
) -> None:
    mark = upstream.mark()
    skopeo.pull(upstream.host, f"{test_images.APP}:1", workdir / "out")
    image = test_images.app.image()
    for digest, size in image.blobs.items():
        fetches = upstream.blob_fetches(digest, since=mark)
        assert [(f.status, f.written) for f in fetches] == [(200, size)]
    assert upstream.blob_bytes_written(since=mark) == image.blob_bytes
    assert upstream.manifest_requests("1", since=mark)


def test_token_registry_serves_public_anonymously_and_private_with_credentials(
    token_upstream: TokenRegistry, test_images: TestImages, workdir: Path
) -> None:
    registry = token_upstream.registry
    assert registry is not None
    public = skopeo.pull(registry.host, f"{token_upstream.public}:1", workdir / "public")
    assert skopeo.verify_dir(public) == test_images.app.image().blobs
    private = skopeo.pull(
        registry.host,
        f"{token_upstream.private}:1",
        workdir / "private",
        creds=token_upstream.creds,
    )
    assert skopeo.manifest_digest(private) == test_images.app.digest
    with pytest.raises(CommandFailed, match=r"denied|unauthorized"):
        skopeo.pull(registry.host, f"{token_upstream.private}:1", workdir / "anonymous")
    with pytest.raises(CommandFailed, match=r"unauthorized|invalid username/password"):
        skopeo.pull(
            registry.host,
            f"{token_upstream.private}:1",
            workdir / "wrong",
            creds=f"{token_upstream.user}:wrong",
        )
    statuses = [(r.account, r.status) for r in token_upstream.tokens.requests_snapshot()]
    assert (token_upstream.user, 401) in statuses


def test_pull_through_cache_registry_serves_after_its_upstream_stops(
    registry_factory: Callable[..., Registry], test_images: TestImages, workdir: Path
) -> None:
    origin = registry_factory(name="origin")
    push(test_images.app, origin.host, f"{test_images.APP}:1")
    cache = registry_factory(name="cache", proxy_remote=origin.url)
    skopeo.pull(cache.host, f"{test_images.APP}:1", workdir / "cold")
    # The cache stores what it proxied in the background, after serving it: wait for that.
    blobs = cache.workdir / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
    wanted = [blobs / d[7:9] / d[7:] / "data" for d in test_images.app.image().blobs]
    wait_until(lambda: all(p.exists() for p in wanted), 30, "the cache stored every blob")
    origin.stop()
    warm = skopeo.pull(cache.host, f"{test_images.APP}:1", workdir / "warm")
    assert skopeo.verify_dir(warm) == test_images.app.image().blobs


def test_containerd_pulls_from_the_registry_named_in_hosts_toml(
    containerd: Containerd, upstream: Registry, test_images: TestImages, workdir: Path
) -> None:
    hosts = workdir / "certs.d"
    write_hosts_toml(hosts, upstream.host, upstream.url, mirror=None)
    reference = f"{upstream.host}/{test_images.APP}:1"
    containerd.pull(reference, hosts)
    assert containerd.image_digest(reference) == test_images.app.digest
    for digest, size in test_images.app.image().blobs.items():
        containerd.verify_content(digest, size)


def test_podman_pulls_through_registries_conf(
    podman: Podman, upstream: Registry, test_images: TestImages
) -> None:
    podman.configure(location=upstream.host, mirror=None)
    podman.pull(f"{test_images.APP}:1")
    info = podman.inspect(f"{test_images.APP}:1")
    assert info["Digest"] == test_images.app.digest
    assert info["RootFS"] == {"Type": "layers", "Layers": list(test_images.app.image().diff_ids)}
