"""OCI images written in Python: an image layout on disk, then pushed to a registry with skopeo.

No Docker engine is needed. Layers are real tar files holding one file of seeded random bytes
(incompressible, so sizes are what they say), stored either uncompressed (`...layer.v1.tar`, the
fast way to make a 64 MiB layer) or gzip-compressed. The config's `rootfs.diff_ids` are the sha256
of the uncompressed tars, so every client (containerd unpacks) accepts the images.

    image = build_image(tmp / "app", "1", [LayerSpec(64 * MiB), LayerSpec(300_000, gzip=True)])
    push(image, registry.host, "test/app:1")
    image.digest, image.blobs      # what a pull must produce
"""

from __future__ import annotations

import hashlib
import json
import random
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.image import Blob
from tests.support.process import run, run_bytes

KiB = 1024
MiB = 1024 * KiB

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
EPOCH = "1970-01-01T00:00:00Z"
_STEP = MiB


@dataclass(frozen=True)
class LayerSpec:
    """A layer holding `size` bytes of random content (the tar is a little larger)."""

    size: int
    gzip: bool = False


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}"


@dataclass(frozen=True)
class ImageManifest:
    """One single-platform image: its manifest, config and layers."""

    manifest: Blob
    platform: Platform
    config: Blob
    layers: tuple[Blob, ...]
    diff_ids: tuple[str, ...]

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def blobs(self) -> dict[str, int]:
        """What /v2/<name>/blobs/ serves for this image: the config and every layer."""
        return {b.digest: b.size for b in (self.config, *self.layers)}

    @property
    def blob_bytes(self) -> int:
        return sum(self.blobs.values())


@dataclass
class OciImage:
    """An OCI image layout directory holding one tag: an image or an index of images."""

    layout: Path
    tag: str
    top: Blob  # the tag's manifest or index
    images: list[ImageManifest] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return self.top.digest

    @property
    def is_index(self) -> bool:
        return self.top.media_type == OCI_INDEX

    @property
    def manifest_digests(self) -> list[str]:
        digests = [image.digest for image in self.images]
        return [self.top.digest, *digests] if self.is_index else digests

    @property
    def blobs(self) -> dict[str, int]:
        """Every config and layer blob of every platform, digest -> size."""
        found: dict[str, int] = {}
        for image in self.images:
            found.update(image.blobs)
        return found

    def image(self, architecture: str = "amd64") -> ImageManifest:
        for image in self.images:
            if image.platform.architecture == architecture:
                return image
        raise KeyError(f"no {architecture} image in {self.layout}")

    def largest_layer(self) -> Blob:
        return max((layer for image in self.images for layer in image.layers), key=_size)

    def read_blob(self, digest: str) -> bytes:
        return _blob_path(self.layout, digest).read_bytes()


def _size(blob: Blob) -> int:
    return blob.size


def build_image(
    layout: Path,
    tag: str,
    layers: Sequence[LayerSpec],
    seed: str,
    platform: Platform | None = None,
) -> OciImage:
    """Write a single-platform image to the layout directory `layout` under `tag`."""
    _init_layout(layout)
    image = _write_image(layout, layers, seed, platform or Platform("linux", "amd64"))
    _write_index(layout, image.manifest, tag)
    return OciImage(layout, tag, image.manifest, [image])


def build_index(
    layout: Path,
    tag: str,
    layers: Sequence[LayerSpec],
    seed: str,
    platforms: Sequence[Platform] = (Platform("linux", "amd64"), Platform("linux", "arm64")),
) -> OciImage:
    """Write a multi-platform image: an image index with one image per platform, each with its
    own layers (seeded by platform), so a pull of one platform touches only its own blobs."""
    _init_layout(layout)
    images = [_write_image(layout, layers, f"{seed}/{p}", p) for p in platforms]
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                **image.manifest.descriptor(),
                "platform": {
                    "architecture": image.platform.architecture,
                    "os": image.platform.os,
                },
            }
            for image in images
        ],
    }
    top = _write_json_blob(layout, index, OCI_INDEX)
    _write_index(layout, top, tag)
    return OciImage(layout, tag, top, images)


def push(
    image: OciImage,
    registry_host: str,
    reference: str,
    creds: str | None = None,
) -> None:
    """Copy the layout's tag to `docker://registry_host/reference`, byte for byte."""
    argv = ["skopeo", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false"]
    argv += [f"--dest-creds={creds}"] if creds else ["--dest-no-creds"]
    if image.is_index:
        argv.append("--all")
    argv += [f"oci:{image.layout}:{image.tag}", f"docker://{registry_host}/{reference}"]
    run(argv, timeout=180)


@dataclass(frozen=True)
class DockerPush:
    """What a registry holds after `push_as_docker`: Docker schema 2 manifests, converted from
    the layout's OCI ones (new manifest digests; configs and gzip layers unchanged)."""

    reference: str
    digest: str
    media_type: str
    manifests: dict[str, str]  # architecture -> digest of its Docker manifest


def push_as_docker(image: OciImage, registry_host: str, reference: str) -> DockerPush:
    """Push converted to Docker schema 2: a manifest, or a manifest list for an index. Every
    layer must be gzip (Docker types have no uncompressed OCI layer, skopeo would compress)."""
    assert all(layer.media_type == LAYER_GZIP for i in image.images for layer in i.layers)
    argv = ["skopeo", "copy", "--quiet", "--format=v2s2", "--dest-tls-verify=false"]
    argv += ["--dest-no-creds", "--all"] if image.is_index else ["--dest-no-creds"]
    run([*argv, f"oci:{image.layout}:{image.tag}", f"docker://{registry_host}/{reference}"])
    inspect = ["skopeo", "inspect", "--raw", "--tls-verify=false", "--no-creds"]
    raw = run_bytes([*inspect, f"docker://{registry_host}/{reference}"])
    document = json.loads(raw)
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    if "manifests" in document:
        manifests = {m["platform"]["architecture"]: m["digest"] for m in document["manifests"]}
    else:
        manifests = {image.images[0].platform.architecture: digest}
    return DockerPush(reference, digest, document["mediaType"], manifests)


def _init_layout(layout: Path) -> None:
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))


def _write_index(layout: Path, top: Blob, tag: str) -> None:
    descriptor = {**top.descriptor(), "annotations": {REF_NAME: tag}}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]}
    (layout / "index.json").write_text(json.dumps(index))


def _write_image(
    layout: Path, specs: Sequence[LayerSpec], seed: str, platform: Platform
) -> ImageManifest:
    written = [_write_layer(layout, spec, f"{seed}/{i}") for i, spec in enumerate(specs)]
    layers = tuple(layer for layer, _ in written)
    diff_ids = tuple(diff_id for _, diff_id in written)
    config = {
        "architecture": platform.architecture,
        "os": platform.os,
        "created": EPOCH,
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Labels": {"test.seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created": EPOCH, "created_by": f"tests.support.images {seed}"}],
    }
    config_blob = _write_json_blob(layout, config, OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    manifest_blob = _write_json_blob(layout, manifest, OCI_MANIFEST)
    return ImageManifest(manifest_blob, platform, config_blob, layers, diff_ids)


def _write_json_blob(layout: Path, document: object, media_type: str) -> Blob:
    body = json.dumps(document, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    _blob_path(layout, digest).write_bytes(body)
    return Blob(digest, len(body), media_type)


def _blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


def _tar_pieces(size: int, seed: str) -> Iterator[bytes]:
    """A tar archive holding one file of `size` seeded random bytes, in pieces."""
    info = tarfile.TarInfo(f"data/{hashlib.sha256(seed.encode()).hexdigest()[:16]}.bin")
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uname = info.gname = "root"
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    yield header
    rng = random.Random(seed)
    for offset in range(0, size, _STEP):
        yield rng.randbytes(min(_STEP, size - offset))
    padding = -size % tarfile.BLOCKSIZE
    written = len(header) + size + padding + 2 * tarfile.BLOCKSIZE
    yield b"\0" * (padding + 2 * tarfile.BLOCKSIZE + (-written % tarfile.RECORDSIZE))


def _write_layer(layout: Path, spec: LayerSpec, seed: str) -> tuple[Blob, str]:
    """Stream the tar to the layout, hashing the tar (diff_id) and the stored bytes (digest)."""
    tmp = layout / "blobs" / "sha256" / f".tmp-{hashlib.sha256(seed.encode()).hexdigest()}"
    uncompressed = hashlib.sha256()
    stored = hashlib.sha256()
    size = 0
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31) if spec.gzip else None
    with open(tmp, "wb") as out:
        for piece in _tar_pieces(spec.size, seed):
            uncompressed.update(piece)
            data = compressor.compress(piece) if compressor else piece
            stored.update(data)
            size += len(data)
            out.write(data)
        if compressor:
            tail = compressor.flush()
            stored.update(tail)
            size += len(tail)
            out.write(tail)
    digest = "sha256:" + stored.hexdigest()
    tmp.rename(_blob_path(layout, digest))
    media_type = LAYER_GZIP if spec.gzip else LAYER_TAR
    return Blob(digest, size, media_type), "sha256:" + uncompressed.hexdigest()


@dataclass(frozen=True)
class TestImages:
    """The images the integration tests pull, built once per session.

    app:    three layers, one of 8 MiB (two 4 MiB chunks) and two small gzip ones;
    big:    a 64 MiB uncompressed layer (17 chunks of 4 MiB) and a 1 MiB gzip one;
    multi:  an index of linux/amd64 and linux/arm64 images with distinct layers;
    docker: an index of gzip layers only, pushed as a Docker manifest list (`push_as_docker`).
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    app: OciImage
    big: OciImage
    multi: OciImage
    docker: OciImage

    # Where each lives on an upstream registry.
    APP = "test/app"
    BIG = "test/big"
    MULTI = "test/multi"
    DOCKER = "test/docker"
    TAG = "1"

    def pushes(self) -> list[tuple[OciImage, str]]:
        return [
            (self.app, f"{self.APP}:{self.TAG}"),
            (self.big, f"{self.BIG}:{self.TAG}"),
            (self.multi, f"{self.MULTI}:{self.TAG}"),
        ]


def build_test_images(directory: Path) -> TestImages:
    return TestImages(
        app=build_image(
            directory / "app",
            "1",
            [LayerSpec(8 * MiB), LayerSpec(300 * KiB, gzip=True), LayerSpec(20 * KiB, gzip=True)],
            seed="app",
        ),
        big=build_image(
            directory / "big",
            "1",
            [LayerSpec(64 * MiB + 4321), LayerSpec(1 * MiB, gzip=True)],
            seed="big",
        ),
        multi=build_index(
            directory / "multi",
            "1",
            [LayerSpec(2 * MiB), LayerSpec(100 * KiB, gzip=True)],
            seed="multi",
        ),
        docker=build_index(
            directory / "docker",
            "1",
            [LayerSpec(1 * MiB, gzip=True), LayerSpec(40 * KiB, gzip=True)],
            seed="docker",
        ),
    )
