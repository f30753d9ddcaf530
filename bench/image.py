"""The synthetic image: an OCI image layout written here, then pushed with skopeo.

Each layer is an uncompressed tar holding one file of random bytes, so the bytes on the wire are
the size asked for (nothing compresses) and no Docker engine is needed. The layers share the
requested size evenly; the config's `rootfs.diff_ids` are the layers' own digests (a tar's
diff_id is its sha256), so any client accepts the image.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
EPOCH = "1970-01-01T00:00:00Z"
STEP = 8 << 20
# A one-file tar: a 512-byte header, the data padded to 512, two zero blocks, padded to 10 KiB.
TAR_OVERHEAD = 3 * tarfile.BLOCKSIZE + tarfile.RECORDSIZE


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    media_type: str

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Image:
    layout: Path
    tag: str
    manifest: Blob
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def blob_bytes(self) -> int:
        """S: the bytes a pull must move (config and layers; the manifest is a few hundred)."""
        return self.config.size + sum(layer.size for layer in self.layers)


def build(layout: Path, size: int, layers: int, tag: str = "1") -> Image:
    """Write an image of about `size` bytes in `layers` layers to the layout directory."""
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    share = max(size // layers - TAR_OVERHEAD, 1)
    written = tuple(_write_layer(layout, share, i) for i in range(layers))
    config = _write_json(layout, _config(written), CONFIG_TYPE)
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in written],
    }
    manifest = _write_json(layout, manifest_doc, MANIFEST_TYPE)
    ref = {**manifest.descriptor(), "annotations": {"org.opencontainers.image.ref.name": tag}}
    index = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [ref]}
    (layout / "index.json").write_text(json.dumps(index))
    return Image(layout, tag, manifest, config, written)


def push_argv(image: Image, registry: str, reference: str) -> list[str]:
    """The skopeo command that copies the image, byte for byte, to `registry/reference`."""
    return [
        "skopeo", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
        "--dest-no-creds", f"oci:{image.layout}:{image.tag}", f"docker://{registry}/{reference}",
    ]  # fmt: skip


def _config(layers: tuple[Blob, ...]) -> dict[str, object]:
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": EPOCH,
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Labels": {"distributed-images.bench": "1"}},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        "history": [{"created": EPOCH, "created_by": "distributed-images bench"}],
    }


def _write_json(layout: Path, document: object, media_type: str) -> Blob:
    body = json.dumps(document, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    _blob_path(layout, digest).write_bytes(body)
    return Blob(digest, len(body), media_type)


def _blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


def _write_layer(layout: Path, size: int, index: int) -> Blob:
    temporary = layout / "blobs" / f"layer{index}.tmp"
    digest = hashlib.sha256()
    written = 0
    with temporary.open("wb") as f:
        for piece in _tar_pieces(size, f"layer{index}.bin"):
            digest.update(piece)
            f.write(piece)
            written += len(piece)
    blob = Blob("sha256:" + digest.hexdigest(), written, LAYER_TYPE)
    temporary.rename(_blob_path(layout, blob.digest))
    return blob


def _tar_pieces(size: int, name: str) -> Iterator[bytes]:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.uname = info.gname = "root"
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    yield header
    for offset in range(0, size, STEP):
        yield os.urandom(min(STEP, size - offset))
    padding = -size % tarfile.BLOCKSIZE
    end = len(header) + size + padding + 2 * tarfile.BLOCKSIZE
    yield b"\0" * (padding + 2 * tarfile.BLOCKSIZE + (-end % tarfile.RECORDSIZE))
