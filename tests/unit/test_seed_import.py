"""Archives of every accepted format become seeded images, verified and pinned; broken ones are
reported and skipped, and never leave wrong bytes behind. Archives are written here in Python,
so each can be broken on purpose (the integration tests use archives skopeo writes)."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import logging
import os
import tarfile
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from unittest.mock import patch

import pytest
import zstandard

from node.oci import mediatypes
from node.seed import SeedConfig, Seeds
from node.seed import seeds as seeds_module
from node.store.contentstore import DISK_RESERVE, ContentStore
from node.store.memory import UNLIMITED, MemoryBlobs
from node.store.metadata import Metadata
from tests.support.images import LayerSpec, OciImage, Platform, build_image, build_index

APP = "docker.io/test/app:1"
LEGACY_LAYER = "application/vnd.docker.image.rootfs.diff.tar"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def logged(caplog: pytest.LogCaptureFixture, message: str, archive: str) -> bool:
    return any(
        message in r.getMessage() and getattr(r, "archive", None) == archive for r in caplog.records
    )


# -- archives


def oci_image(tmp: Path, tag: str = APP, seed: str = "app") -> OciImage:
    layers = [LayerSpec(300_000), LayerSpec(40_000, gzip=True)]
    return build_image(tmp / "src" / seed, tag, layers, seed=seed)


def pack(files: Iterable[tuple[str, bytes]], out: Path, compress: str | None = None) -> Path:
    """A tar of `files` (name, content) in the given order, maybe compressed."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    if compress == "gzip":
        data = gzip.compress(data, 1)
    elif compress == "zstd":
        data = zstandard.ZstdCompressor().compress(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return out


def layout_files(layout: Path) -> list[tuple[str, bytes]]:
    """The layout's files, blobs first (as `docker save` and skopeo write them)."""
    paths = sorted(p for p in layout.rglob("*") if p.is_file())
    return [(p.relative_to(layout).as_posix(), p.read_bytes()) for p in paths]


def legacy_files(image: OciImage, repo_tags: list[str]) -> list[tuple[str, bytes]]:
    """A legacy `docker save`: layer directories, the config, then manifest.json last."""
    manifest = image.image()
    config = image.read_blob(manifest.config.digest)
    files: list[tuple[str, bytes]] = []
    layer_names = []
    for i, layer in enumerate(manifest.layers):
        data = image.read_blob(layer.digest)
        if layer.media_type.endswith("gzip"):
            data = gzip.decompress(data)
        layer_names.append(f"{i:064x}/layer.tar")
        files += [(f"{i:064x}/VERSION", b"1.0"), (layer_names[-1], data)]
    files.append((manifest.config.digest.removeprefix("sha256:") + ".json", config))
    entry = {"Config": files[-1][0], "RepoTags": repo_tags, "Layers": layer_names}
    files.append(("manifest.json", json.dumps([entry]).encode()))
    files.append(("repositories", b"{}"))
    return files


# -- the seeder under test


class Seeder:
    """Seeds over a directory of archives and an in-memory store."""

    def __init__(self, images: Path, store: ContentStore | None = None) -> None:
        self.images = images
        self.store = store or ContentStore.memory()
        self.seeds = Seeds(images, self.store, SeedConfig(seed_scan_interval=0.05))

    async def settle(self) -> None:
        """Two scans: an archive just written is imported once it is unchanged for one."""
        await self.seeds.sync()
        await self.seeds.sync()

    def lookup(self, ref: str) -> str | None:
        ns, _, rest = ref.partition("/")
        repo, _, tag = rest.rpartition(":")
        return self.seeds.lookup(ns, repo, tag)

    async def manifest(self, digest: str) -> tuple[dict[str, object], str]:
        info = self.store.require(digest)
        assert info.media_type is not None
        return json.loads(await self.store.read_all(digest)), info.media_type

    async def check_blobs(self, digests: dict[str, int]) -> None:
        """Every blob stored whole, verified, and pinned by its archive."""
        for digest, size in digests.items():
            data = await self.store.read_all(digest)
            assert (sha256(data), len(data)) == (digest, size)
            assert self.store.pinned(digest), digest


@pytest.fixture
async def seeder(tmp_path: Path) -> AsyncIterator[Seeder]:
    seeder = Seeder(tmp_path / "images")
    seeder.images.mkdir()
    yield seeder
    seeder.store.close()


# -- formats


async def test_an_oci_layout_directory_is_seeded(seeder: Seeder, tmp_path: Path) -> None:
    image = oci_image(tmp_path)
    (seeder.images / "app").symlink_to(image.layout)  # the images dir may link to archives
    await seeder.settle()
    assert seeder.lookup(APP) == image.digest
    assert seeder.seeds.refs() == [(APP, image.digest)]
    await seeder.check_blobs({image.digest: image.top.size, **image.blobs})
    assert (await seeder.manifest(image.digest))[1] == mediatypes.OCI_MANIFEST


@pytest.mark.parametrize("compress", [None, "gzip", "zstd"])
async def test_an_oci_archive_is_seeded(
    seeder: Seeder, tmp_path: Path, compress: str | None
) -> None:
    image = oci_image(tmp_path)
    pack(layout_files(image.layout), seeder.images / "app.tar", compress)
    await seeder.settle()
    assert seeder.seeds.failures() == {}
    assert seeder.lookup(APP) == image.digest
    await seeder.check_blobs({image.digest: image.top.size, **image.blobs})


@pytest.mark.parametrize("compress", [None, "gzip", "zstd"])
async def test_a_legacy_docker_save_gets_a_registry_manifest(
    seeder: Seeder, tmp_path: Path, compress: str | None
) -> None:
    image = oci_image(tmp_path)
    pack(legacy_files(image, ["app:1", "app:latest"]), seeder.images / "app.tar", compress)
    await seeder.settle()
    assert seeder.seeds.failures() == {}
    digest = seeder.lookup("docker.io/library/app:1")
    assert digest is not None and seeder.lookup("docker.io/library/app:latest") == digest
    manifest, media_type = await seeder.manifest(digest)
    assert media_type == mediatypes.DOCKER_MANIFEST == manifest["mediaType"]
    config = image.image().config
    assert manifest["config"] == {
        "mediaType": mediatypes.DOCKER_CONFIG,
        "size": config.size,
        "digest": config.digest,
    }
    layers = manifest["layers"]
    assert isinstance(layers, list)
    # Uncompressed layers: each digest is the layer's diff_id.
    assert [layer["digest"] for layer in layers] == list(image.image().diff_ids)
    assert {layer["mediaType"] for layer in layers} == {LEGACY_LAYER}
    await seeder.check_blobs({layer["digest"]: layer["size"] for layer in layers})


async def test_the_synthesized_manifest_is_the_same_on_every_node(tmp_path: Path) -> None:
    image = oci_image(tmp_path)
    digests = []
    for compress in (None, "zstd"):
        seeder = Seeder(tmp_path / f"images-{compress}")
        pack(legacy_files(image, ["app:1"]), seeder.images / "app.tar", compress)
        await seeder.settle()
        digests.append(seeder.lookup("docker.io/library/app:1"))
        seeder.store.close()
    assert digests[0] is not None and digests[0] == digests[1]


async def test_a_multi_platform_index_is_seeded_with_its_platforms(
    seeder: Seeder, tmp_path: Path
) -> None:
    index = build_index(tmp_path / "multi", "ghcr.io/x/multi:2", [LayerSpec(50_000)], seed="m")
    pack(layout_files(index.layout), seeder.images / "multi.tar.zst", "zstd")
    await seeder.settle()
    assert seeder.lookup("ghcr.io/x/multi:2") == index.digest
    assert (await seeder.manifest(index.digest))[1] == mediatypes.OCI_INDEX
    for image in index.images:
        await seeder.check_blobs({image.digest: image.manifest.size, **image.blobs})


async def test_an_index_saved_for_one_platform_is_seeded(seeder: Seeder, tmp_path: Path) -> None:
    platforms = (Platform("linux", "amd64"), Platform("linux", "arm64"))
    index = build_index(tmp_path / "multi", APP, [LayerSpec(10_000)], seed="p", platforms=platforms)
    arm = index.image("arm64")
    files = [
        (name, data)
        for name, data in layout_files(index.layout)
        if not any(name.endswith(d.removeprefix("sha256:")) for d in [arm.digest, *arm.blobs])
    ]
    pack(files, seeder.images / "amd64-only.tar")
    await seeder.settle()
    assert seeder.seeds.failures() == {}
    assert seeder.lookup(APP) == index.digest
    await seeder.check_blobs(index.image("amd64").blobs)


async def test_untagged_and_bare_tagged_images_are_reachable_by_digest(
    seeder: Seeder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bare = oci_image(tmp_path, tag="1", seed="bare")
    pack(layout_files(bare.layout), seeder.images / "bare.tar")
    untagged = oci_image(tmp_path, seed="untagged")
    index = json.loads((untagged.layout / "index.json").read_bytes())
    del index["manifests"][0]["annotations"]
    (untagged.layout / "index.json").write_text(json.dumps(index))
    pack(layout_files(untagged.layout), seeder.images / "untagged.tar")
    with caplog.at_level(logging.WARNING):
        await seeder.settle()
    assert seeder.seeds.refs() == []
    for image in (bare, untagged):
        assert seeder.store.stat(image.digest) is not None
        await seeder.check_blobs(image.blobs)
    assert logged(caplog, "no repository", "bare.tar")


async def test_an_archive_already_in_the_store_is_pinned_without_copying(
    tmp_path: Path,
) -> None:
    image = oci_image(tmp_path)
    images = tmp_path / "images"
    pack(layout_files(image.layout), images / "app.tar")
    for _start in range(2):  # a restart: same data dir, same archive
        store = ContentStore.open(tmp_path / "data")
        seeds = Seeds(images, store, SeedConfig())
        await seeds.sync()
        await seeds.sync()
        [seeded] = seeds.archives()
        assert store.pinned(image.digest)
        store.close()
    assert seeded.digests == {image.digest, *image.blobs}


# -- broken input: reported, skipped, no wrong bytes, and the rest is still seeded


def corrupt_layer(image: OciImage) -> tuple[str, bytes]:
    """The image's first layer with one byte changed (same name, same size)."""
    layer = image.image().layers[0]
    data = bytearray(image.read_blob(layer.digest))
    data[len(data) // 2] ^= 0xFF
    return layer.digest, bytes(data)


def _without(files: list[tuple[str, bytes]], digest: str) -> list[tuple[str, bytes]]:
    return [(n, d) for n, d in files if not n.endswith(digest.removeprefix("sha256:"))]


def _replace(files: list[tuple[str, bytes]], name: str, data: bytes) -> list[tuple[str, bytes]]:
    return [(n, data if n == name else d) for n, d in files]


def truncated(data: bytes, at: int) -> bytes:
    return data[:at]


BROKEN = [
    "truncated-in-a-layer",
    "truncated-between-members",
    "truncated-gzip",
    "truncated-zstd",
    "corrupt-header",
    "corrupt-gzip",
    "layer-digest-mismatch",
    "layer-digest-mismatch-zstd",
    "manifest-digest-mismatch",
    "legacy-diff-id-mismatch",
    "missing-layer",
    "missing-manifest-json-config",
    "path-traversal",
    "absolute-path",
    "symlink-escapes",
    "legacy-layer-path-escapes",
    "not-an-archive",
    "bad-index-json",
    "wrong-layer-size",
]


def write_broken(kind: str, image: OciImage, out: Path) -> str:
    """Write the broken archive `kind` to `out`; returns what the report must mention."""
    files = layout_files(image.layout)
    layer = image.image().layers[0]
    layer_name = "blobs/sha256/" + layer.digest.removeprefix("sha256:")
    if kind.startswith("truncated"):
        compress = {"gzip": "gzip", "zstd": "zstd"}.get(kind.rpartition("-")[2])
        data = pack(files, out, compress).read_bytes()
        if kind == "truncated-between-members":
            cut = data.index(b"index.json") - 257 + 512 + 1024  # a whole member, no end marker
            cut = len(data) - 1024 * 10 - 512 if cut >= len(data) else cut
            out.write_bytes(data[: cut - cut % 512])
        else:
            out.write_bytes(data[: len(data) // 2])
        return "truncated" if compress is None else ""
    if kind == "corrupt-header":
        data = bytearray(pack(files, out).read_bytes())
        at = data.index(b"index.json")
        data[at : at + 10] = b"XXXXXXXXXX"  # the header checksum no longer matches
        out.write_bytes(bytes(data))
        return "corrupt tar header"
    if kind == "corrupt-gzip":
        data = bytearray(pack(files, out, "gzip").read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
        out.write_bytes(bytes(data))
        return ""
    if kind.startswith("layer-digest-mismatch"):
        _, bad = corrupt_layer(image)
        pack(_replace(files, layer_name, bad), out, "zstd" if kind.endswith("zstd") else None)
        return "digest mismatch"
    if kind == "manifest-digest-mismatch":
        name = "blobs/sha256/" + image.digest.removeprefix("sha256:")
        body = image.read_blob(image.digest).replace(b'"schemaVersion":2', b'"schemaVersion":3')
        pack(_replace(files, name, body), out)
        return "digest mismatch"
    if kind == "legacy-diff-id-mismatch":
        legacy = legacy_files(image, ["app:1"])
        name, data = legacy[1]
        pack(_replace(legacy, name, data[:-1] + b"x"), out)
        return "digest mismatch"
    if kind == "missing-layer":
        pack(_without(files, layer.digest), out)
        return "missing"
    if kind == "missing-manifest-json-config":
        config = image.image().config.digest.removeprefix("sha256:") + ".json"
        legacy = [(n, d) for n, d in legacy_files(image, ["app:1"]) if n != config]
        pack(legacy, out)
        return "missing"
    if kind == "path-traversal":
        pack([*files, ("../../escaped", b"x")], out)
        return "leaves the archive"
    if kind == "absolute-path":
        pack([("/etc/cron.d/x", b"x"), *files], out)
        return "leaves the archive"
    if kind == "symlink-escapes":
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, data in _without(files, layer.digest):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            link = tarfile.TarInfo(layer_name)
            link.type = tarfile.SYMTYPE
            link.linkname = "../../../../etc/hostname"
            tar.addfile(link)
        out.write_bytes(buffer.getvalue())
        return "leaves the archive"
    if kind == "legacy-layer-path-escapes":
        legacy = legacy_files(image, ["app:1"])
        entry = json.loads(legacy[-2][1])
        entry[0]["Layers"][0] = "../../etc/hostname"
        pack(_replace(legacy, "manifest.json", json.dumps(entry).encode()), out)
        return "leaves the archive"
    if kind == "not-an-archive":
        out.write_bytes(b"these are the release notes, not an image\n" * 40)
        return "not a tar"
    if kind == "bad-index-json":
        pack(_replace(files, "index.json", b"{not json"), out)
        return "not valid JSON"
    if kind == "wrong-layer-size":
        name = "blobs/sha256/" + image.digest.removeprefix("sha256:")
        manifest = json.loads(image.read_blob(image.digest))
        manifest["layers"][0]["size"] += 1
        body = json.dumps(manifest).encode()
        files = [*_without(files, image.digest), ("blobs/sha256/" + sha256(body)[7:], body)]
        index = json.loads(dict(files)["index.json"])
        index["manifests"][0].update(digest=sha256(body), size=len(body))
        pack([*_replace(files, "index.json", json.dumps(index).encode()), (name, b"")], out)
        return "size differs"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", BROKEN)
async def test_a_broken_archive_is_reported_and_skipped(
    seeder: Seeder, tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    image = oci_image(tmp_path)
    mention = write_broken(kind, image, seeder.images / f"{kind}.tar")
    good = oci_image(tmp_path, tag="docker.io/test/good:1", seed="good")
    pack(layout_files(good.layout), seeder.images / "good.tar")
    with caplog.at_level(logging.ERROR):
        await seeder.settle()
    failures = seeder.seeds.failures()
    assert list(failures) == [f"{kind}.tar"], failures
    assert mention in failures[f"{kind}.tar"]
    assert logged(caplog, "archive skipped", f"{kind}.tar")
    assert seeder.lookup(APP) is None
    # Nothing of it stays pinned; nothing is stored under a digest its bytes do not have.
    for info in seeder.store.blobs():
        assert sha256(await seeder.store.read_all(info.digest)) == info.digest
        assert seeder.store.pinned(info.digest) == (
            info.digest in seeder.seeds.archives()[0].digests
        )
    assert seeder.lookup("docker.io/test/good:1") == good.digest
    # Reported once: an unchanged broken archive is not tried again.
    caplog.clear()
    await seeder.settle()
    assert not logged(caplog, "archive skipped", f"{kind}.tar")


async def test_an_unsafe_link_in_a_layout_directory_is_refused(
    seeder: Seeder, tmp_path: Path
) -> None:
    image = oci_image(tmp_path)
    layer = image.image().layers[0]
    path = image.layout / "blobs" / "sha256" / layer.digest.removeprefix("sha256:")
    outside = tmp_path / "outside"
    path.rename(outside)
    path.symlink_to(outside)
    (seeder.images / "app").symlink_to(image.layout)
    await seeder.settle()
    assert "leaves the archive" in seeder.seeds.failures()["app"]
    assert seeder.store.stat(layer.digest) is None


# -- archives that would exhaust the node: refused before they are written


class CountingBlobs(MemoryBlobs):
    """Memory blobs that count every byte ever written."""

    def __init__(self, capacity: int = UNLIMITED) -> None:
        super().__init__(capacity)
        self.written = 0

    def allocate(self, length: int) -> None:
        super().allocate(length)
        self.written += max(0, length)


class Zeros(io.RawIOBase):
    """`size` zero bytes, never all in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def bomb(image: OciImage, out: Path, size: int) -> Path:
    """The image's OCI archive, zstd-compressed, with one more member first: `size` zero bytes
    under a blob's name (whose digest they do not have). A few KiB on disk."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        out.open("wb") as raw,
        zstandard.ZstdCompressor().stream_writer(raw) as packed,
        tarfile.open(fileobj=packed, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        info = tarfile.TarInfo("blobs/sha256/" + sha256(b"not these bytes")[7:])
        info.size = size
        tar.addfile(info, io.BufferedReader(Zeros(size)))
        for name, data in layout_files(image.layout):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return out


async def test_a_decompression_bomb_is_refused_before_it_is_written(tmp_path: Path) -> None:
    blobs = CountingBlobs()
    seeder = Seeder(tmp_path / "images", ContentStore(blobs, Metadata(None)))
    image = build_image(tmp_path / "small", APP, [LayerSpec(1000)], seed="small")
    archive = bomb(image, seeder.images / "bomb.tar.zst", 128 << 20)
    assert archive.stat().st_size < 16 << 10
    await seeder.settle()
    assert "decompression bomb" in seeder.seeds.failures()["bomb.tar.zst"]
    assert "gzip" in seeder.seeds.skipped()[0].fix
    assert blobs.written < 1 << 20, f"{blobs.written} bytes written"
    assert seeder.lookup(APP) is None
    seeder.store.close()


@pytest.mark.parametrize("limit", ["quota", "disk"])
async def test_an_archive_larger_than_the_store_can_keep_is_skipped_before_it_is_written(
    tmp_path: Path, limit: str, caplog: pytest.LogCaptureFixture
) -> None:
    image = oci_image(tmp_path)  # 340 kB of layers
    if limit == "quota":
        blobs = CountingBlobs()
        store = ContentStore(blobs, Metadata(None), max_bytes=200_000)
    else:
        blobs = CountingBlobs(capacity=DISK_RESERVE + 200_000)
        store = ContentStore(blobs, Metadata(None))
    seeder = Seeder(tmp_path / "images", store)
    pack(layout_files(image.layout), seeder.images / "app.tar")
    with caplog.at_level(logging.ERROR):
        await seeder.settle()
    reason = seeder.seeds.failures()["app.tar"]
    assert "too large for this node" in reason
    assert ("quota" if limit == "quota" else "disk") in reason
    assert "--cache-max-bytes" in seeder.seeds.skipped()[0].fix
    assert logged(caplog, "archive skipped", "app.tar")
    assert blobs.written == 0
    assert seeder.lookup(APP) is None
    store.close()


async def test_a_compressed_archive_larger_than_the_quota_stops_at_the_blob_that_does_not_fit(
    tmp_path: Path,
) -> None:
    image = oci_image(tmp_path)
    largest = max(image.blobs.values())
    blobs = CountingBlobs()
    store = ContentStore(blobs, Metadata(None), max_bytes=largest - 1)
    seeder = Seeder(tmp_path / "images", store)
    pack(layout_files(image.layout), seeder.images / "app.tar.zst", compress="zstd")
    await seeder.settle()
    assert "quota" in seeder.seeds.failures()["app.tar.zst"]
    assert blobs.written < largest
    store.close()


async def test_an_archive_already_stored_is_seeded_on_a_full_disk(tmp_path: Path) -> None:
    image = oci_image(tmp_path)
    blobs = CountingBlobs(capacity=DISK_RESERVE + 400_000)
    store = ContentStore(blobs, Metadata(None))
    seeder = Seeder(tmp_path / "images", store)
    pack(layout_files(image.layout), seeder.images / "app.tar")
    await seeder.settle()
    assert seeder.lookup(APP) == image.digest
    blobs.allocate(blobs.free_bytes())  # something else fills the disk
    again = Seeds(seeder.images, store, SeedConfig())  # the node restarted
    await again.sync()
    await again.sync()
    assert again.failures() == {}
    assert again.lookup("docker.io", "test/app", "1") == image.digest
    store.close()


class FillingBlobs(MemoryBlobs):
    """A disk that something else fills up while the node looks away: it says it has room,
    and refuses every write while `full`."""

    full = False

    def allocate(self, length: int) -> None:
        if self.full and length > 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().allocate(length)


async def test_an_archive_the_disk_filled_up_under_is_imported_again_once_it_has_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seeds_module, "RETRY_SPACING", 0.0)
    image = oci_image(tmp_path)
    blobs = FillingBlobs()
    store = ContentStore(blobs, Metadata(None))
    seeder = Seeder(tmp_path / "images", store)
    pack(layout_files(image.layout), seeder.images / "app.tar")
    blobs.full = True
    await seeder.settle()
    assert "disk is full" in seeder.seeds.failures()["app.tar"]
    assert "free disk space" in seeder.seeds.skipped()[0].fix
    assert seeder.lookup(APP) is None
    blobs.full = False
    await seeder.settle()
    assert seeder.seeds.failures() == {}
    assert seeder.lookup(APP) == image.digest
    await seeder.check_blobs(image.blobs)
    store.close()


async def test_an_archive_at_fault_is_not_tried_again_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seeds_module, "RETRY_SPACING", 0.0)
    seeder = Seeder(tmp_path / "images")
    image = build_image(tmp_path / "small", APP, [LayerSpec(1000)], seed="small")
    bomb(image, seeder.images / "bomb.tar.zst", 128 << 20)
    with patch.object(seeds_module, "ArchiveImport", wraps=seeds_module.ArchiveImport) as job:
        for _ in range(3):
            await seeder.settle()
    assert job.call_count == 1
    assert "decompression bomb" in seeder.seeds.failures()["bomb.tar.zst"]
    seeder.store.close()
