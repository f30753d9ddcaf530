"""Archives in the images directory, written by skopeo from images built here, are served by a
node with no upstream at all, to skopeo and to containerd; the directory is watched; broken
archives are skipped. (A second node pulling them through the cluster is not tested here yet.)"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zstandard

from node.oci import mediatypes
from node.seed import SeedConfig, Seeds
from node.store.contentstore import ContentStore
from tests.support import skopeo
from tests.support.containerd import Containerd, write_hosts_toml
from tests.support.images import (
    ImageManifest,
    LayerSpec,
    OciImage,
    build_image,
    build_index,
    push,
)
from tests.support.node import Node
from tests.support.process import free_port, run, wait_until
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

SERVED_WITHIN = 5.0  # seconds from an archive landing in the directory to its tag being served
LAYERS = [LayerSpec(150_000), LayerSpec(20_000, gzip=True)]


@dataclass
class Seeded:
    """A directory of archives of every kind, and what each tag must resolve to."""

    images_dir: Path
    images: dict[str, OciImage] = field(default_factory=dict)  # by normalized reference
    legacy: set[str] = field(default_factory=set)  # refs whose manifest the node synthesizes

    def source(self, ref: str) -> OciImage:
        return self.images[ref]


def _skopeo_copy(image: OciImage, destination: str, *extra: str) -> None:
    """`skopeo copy`, keeping the image's digests where the destination format allows it."""
    argv = ["skopeo", "copy", "--quiet", *extra]
    if destination.startswith("oci"):
        argv.append("--preserve-digests")
    run([*argv, f"oci:{image.layout}:{image.tag}", destination], timeout=120)


def _compress(path: Path, kind: str) -> Path:
    data = path.read_bytes()
    out = path.with_name(path.name + (".gz" if kind == "gzip" else ".zst"))
    out.write_bytes(gzip.compress(data, 1) if kind == "gzip" else zstandard.compress(data))
    path.unlink()
    return out


def write_archives(root: Path) -> Seeded:
    """One image per archive, so that no archive's blobs can stand in for another's."""
    seeded = Seeded(root / "images")
    seeded.images_dir.mkdir(parents=True)
    src = root / "src"

    def image(name: str) -> OciImage:
        return build_image(src / name, "1", LAYERS, seed=name)

    docker = image("docker")
    _skopeo_copy(docker, f"docker-archive:{seeded.images_dir / 'docker.tar'}:test/docker:1")
    short = image("short")  # `seeded:1`: an official-image name, under library/
    path = seeded.images_dir / "short.tar"
    _skopeo_copy(short, f"docker-archive:{path}:seeded:1")
    _compress(path, "gzip")
    oci = image("oci")
    _skopeo_copy(oci, f"oci-archive:{seeded.images_dir / 'oci.tar'}:test/oci:1")
    zst = image("zstd")
    path = seeded.images_dir / "zstd.tar"
    _skopeo_copy(zst, f"oci-archive:{path}:docker.io/test/zstd:1")
    _compress(path, "zstd")
    layout = image("layout")
    _skopeo_copy(layout, f"oci:{seeded.images_dir / 'layout'}:ghcr.io/test/layout:1")
    multi = build_index(src / "multi", "1", [LayerSpec(30_000)], seed="multi")
    _skopeo_copy(multi, f"oci-archive:{seeded.images_dir / 'multi.tar'}:test/multi:1", "--all")
    seeded.images = {
        "docker.io/test/docker:1": docker,
        "docker.io/library/seeded:1": short,
        "docker.io/test/oci:1": oci,
        "docker.io/test/zstd:1": zst,
        "ghcr.io/test/layout:1": layout,
        "docker.io/test/multi:1": multi,
    }
    seeded.legacy = {"docker.io/test/docker:1", "docker.io/library/seeded:1"}
    return seeded


def write_broken(images_dir: Path, good: Path) -> None:
    """A truncated archive and one with a member escaping the archive, beside the good ones."""
    data = good.read_bytes()
    (images_dir / "truncated.tar").write_bytes(data[: len(data) * 2 // 3])
    escaping = images_dir / "escaping.tar"
    shutil.copy(good, escaping)
    with escaping.open("r+b") as f:  # rename the first member to ../../<same length>
        header = bytearray(f.read(512))
        name = header[:100].rstrip(b"\0")
        header[: len(name)] = (b"../../" + name)[: len(name)]
        header[148:156] = b" " * 8
        header[148:155] = b"%06o\0" % sum(header)
        f.seek(0)
        f.write(header)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return write_archives(tmp_path_factory.mktemp("seeded"))


# -- the archives as skopeo writes them, imported in-process (no node needed)


async def test_every_archive_skopeo_writes_is_imported(seeded: Seeded, tmp_path: Path) -> None:
    images_dir = tmp_path / "images"
    shutil.copytree(seeded.images_dir, images_dir, symlinks=True)
    store = ContentStore.open(tmp_path / "data")
    seeds = Seeds(images_dir, store, SeedConfig())
    try:
        await seeds.sync()
        await seeds.sync()
        assert seeds.failures() == {}
        refs = dict(seeds.refs())
        assert set(refs) == set(seeded.images)
        for ref, image in seeded.images.items():
            if ref in seeded.legacy:
                await _check_synthesized(store, refs[ref], image.image())
            else:
                assert refs[ref] == image.digest, ref
                for digest, size in image.blobs.items():
                    data = await store.read_all(digest)
                    assert hashlib.sha256(data).hexdigest() == digest[7:] and len(data) == size
    finally:
        store.close()


async def _check_synthesized(store: ContentStore, digest: str, image: ImageManifest) -> None:
    manifest = json.loads(await store.read_all(digest))
    assert manifest["mediaType"] == mediatypes.DOCKER_MANIFEST
    assert manifest["config"]["digest"] == image.config.digest
    diff_ids = [layer["digest"] for layer in manifest["layers"]]
    assert diff_ids == list(image.diff_ids)
    for layer in manifest["layers"]:
        assert store.stat(layer["digest"]) is not None


# -- a node with no upstream


def _node(
    workdir: Path, images_dir: Path, upstream: str | None, *extra: str, data_dir: Path | None = None
) -> Node:
    """A node whose docker.io and ghcr.io go to `upstream`, or to a dead loopback port."""
    target = upstream or f"http://127.0.0.1:{free_port()}"
    registries = {"docker.io": target, "ghcr.io": target}
    args = ["--images-dir", str(images_dir), "--seed-scan-interval", "0.5"]
    args += ["--upstream-retries", "0", "--upstream-timeout", "5", *extra]
    return Node(workdir, registries, "docker.io", extra_args=args, data_dir=data_dir)


@pytest.fixture(scope="module")
def offline(
    seeded: Seeded, tmp_path_factory: pytest.TempPathFactory, node_command: None
) -> Iterator[Node]:
    """One node, no upstream, every archive in its directory plus two broken ones."""
    workdir = tmp_path_factory.mktemp("offline")
    images_dir = workdir / "images"
    shutil.copytree(seeded.images_dir, images_dir, symlinks=True)
    write_broken(images_dir, images_dir / "oci.tar")
    server = _node(workdir, images_dir, None)
    server.start()
    try:
        for ref in seeded.images:
            wait_until(lambda ref=ref: manifest(server, ref)[0] == 200, 30, f"{ref} served")
        yield server
    finally:
        server.stop()
        print(server.log_tail())


def manifest(server: Node, ref: str) -> tuple[int, str | None]:
    """GET a manifest by reference with `?ns=`, as containerd asks: (status, digest)."""
    ns, _, rest = ref.partition("/")
    repo, _, tag = rest.rpartition(":")
    request = urllib.request.Request(
        f"{server.url}/v2/{repo}/manifests/{tag}?ns={ns}",
        headers={"Accept": ", ".join(mediatypes.MANIFEST_TYPES)},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Docker-Content-Digest")
    except urllib.error.HTTPError as e:
        e.close()
        return e.code, None


def test_skopeo_pulls_every_seeded_image_with_no_upstream(
    offline: Node, seeded: Seeded, tmp_path: Path
) -> None:
    asked_upstream = offline.metric("distributed_images_upstream_requests_total")
    for ref, image in seeded.images.items():
        if ref.startswith("ghcr.io/") or image.is_index:
            continue  # skopeo sends no ?ns=; the index has its own test
        name = ref.removeprefix("docker.io/").removeprefix("library/")
        out = skopeo.pull(offline.host, name, tmp_path / name.replace("/", "_"))
        blobs = skopeo.verify_dir(out)
        assert set(blobs) >= {image.image().config.digest}
        if ref not in seeded.legacy:
            assert blobs == image.image().blobs
            assert skopeo.manifest_digest(out) == image.digest
    assert offline.metric("distributed_images_blob_bytes_total", source="seed") > 0
    # Seed-first: not even a tag was asked of the (dead) upstream.
    assert offline.metric("distributed_images_upstream_requests_total") == asked_upstream


@pytest.mark.parametrize("architecture", ["amd64", "arm64"])
def test_skopeo_pulls_each_platform_of_a_seeded_index(
    offline: Node, seeded: Seeded, tmp_path: Path, architecture: str
) -> None:
    image = seeded.source("docker.io/test/multi:1").image(architecture)
    out = skopeo.pull(offline.host, "test/multi:1", tmp_path / "out", arch=architecture)
    assert skopeo.verify_dir(out) == image.blobs
    assert skopeo.manifest_digest(out) == image.digest


def test_containerd_pulls_and_unpacks_seeded_images_with_no_upstream(
    offline: Node, seeded: Seeded, containerd: Containerd, tmp_path: Path
) -> None:
    hosts = tmp_path / "certs.d"
    dead = f"http://127.0.0.1:{free_port()}"
    for registry in ("docker.io", "ghcr.io"):
        write_hosts_toml(hosts, registry, server=dead, mirror=offline.url)
    for ref in ("docker.io/test/docker:1", "ghcr.io/test/layout:1", "docker.io/test/multi:1"):
        containerd.pull(ref, hosts, platform="linux/amd64")  # unpacking checks each diff_id
        status, digest = manifest(offline, ref)
        assert status == 200 and containerd.image_digest(ref) == digest
    for digest, size in seeded.source("ghcr.io/test/layout:1").image().blobs.items():
        containerd.verify_content(digest, size)


def test_broken_archives_are_skipped_and_reported(offline: Node) -> None:
    log = offline.log_path.read_text()
    for name in ("truncated.tar", "escaping.tar"):
        assert f'msg="archive skipped" archive={name}' in log, name
    assert "leaves the archive" in log
    assert offline.running


def test_a_node_is_ready_once_the_archives_it_started_with_are_served(
    seeded: Seeded, node_command: None, tmp_path: Path
) -> None:
    """/readyz answers 200 only when the images directory found at start is imported: a probe
    that sees the node ready finds every image it holds served. The archives were written just
    now, as by an init container, so the node waits for them to settle first."""
    images_dir = tmp_path / "images"
    shutil.copytree(seeded.images_dir, images_dir, symlinks=True)
    for path in images_dir.rglob("*"):
        os.utime(path, follow_symlinks=False)  # modified now, not when the fixture made them
    server = _node(tmp_path / "node", images_dir, None)
    server.start()
    try:
        for ref in seeded.images:
            assert manifest(server, ref)[0] == 200, ref
    except BaseException:
        print(server.log_tail())
        raise
    finally:
        server.stop()


# -- watching


def test_an_archive_added_later_is_served_within_seconds_and_a_removed_one_is_not(
    seeded: Seeded, node_command: None, tmp_path: Path
) -> None:
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    server = _node(tmp_path / "node", images_dir, None)
    server.start()
    try:
        ref = "docker.io/test/oci:1"
        assert manifest(server, ref)[0] != 200
        (images_dir / ".oci.tar.part").write_bytes((seeded.images_dir / "oci.tar").read_bytes())
        landed = time.monotonic()
        (images_dir / ".oci.tar.part").rename(images_dir / "oci.tar")  # a finished copy
        wait_until(lambda: manifest(server, ref)[0] == 200, 30, f"{ref} served")
        assert time.monotonic() - landed < SERVED_WITHIN
        assert manifest(server, ref)[1] == seeded.source(ref).digest
        (images_dir / "oci.tar").unlink()
        wait_until(lambda: manifest(server, ref)[0] != 200, 10, f"{ref} no longer served")
    except BaseException:
        print(server.log_tail())
        raise
    finally:
        server.stop()


# -- precedence between the seed and the upstream


def test_precedence_between_a_seeded_tag_and_the_upstream(
    seeded: Seeded,
    node_command: None,
    registry_factory: Callable[..., Registry],
    tmp_path: Path,
) -> None:
    ref, name = "docker.io/test/oci:1", "test/oci:1"
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    shutil.copy(seeded.images_dir / "oci.tar", images_dir / "oci.tar")
    upstream = registry_factory()
    other = build_image(tmp_path / "other", "1", LAYERS, seed="the upstream's")
    push(other, upstream.host, name)
    seed_first = _node(tmp_path / "a", images_dir, upstream.url)
    upstream_first = _node(
        tmp_path / "b", images_dir, upstream.url, "--seed-precedence", "upstream-first"
    )
    nodes = [seed_first, upstream_first]
    try:
        for server in nodes:
            server.start()
            wait_until(lambda s=server: manifest(s, ref)[0] == 200, 30, "seed imported")
            wait_until(lambda s=server: _seeded(s), 30, "seed imported")
        mark = upstream.mark()
        assert manifest(seed_first, ref)[1] == seeded.source(ref).digest
        assert [e for e in upstream.entries(mark) if e.is_manifest()] == []
        assert manifest(upstream_first, ref)[1] == other.digest
        upstream.stop()
        assert manifest(upstream_first, ref)[1] == seeded.source(ref).digest
    except BaseException:
        for server in nodes:
            print(server.log_tail())
        raise
    finally:
        for server in nodes:
            server.stop()


def _seeded(server: Node) -> bool:
    return 'msg="seeded archive" archive=oci.tar' in server.log_path.read_text()
