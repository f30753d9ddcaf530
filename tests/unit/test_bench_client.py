"""The check of a pull's copy: an OCI layout holding the pushed manifest and blobs, whole."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench.client import Pull, check_copy
from bench.image import Image, build
from bench.netns import Host

KiB = 1 << 10


def copied(tmp_path: Path) -> tuple[Image, Path]:
    """The pushed image, and a copy of it laid out as skopeo's `oci:` writes one."""
    image = build(tmp_path / "pushed", 64 * KiB, 2)
    out = tmp_path / "pulled"
    shutil.copytree(image.layout, out)
    return image, out


def test_a_whole_copy_passes(tmp_path: Path) -> None:
    image, out = copied(tmp_path)
    assert check_copy(out, image) is None


def test_a_short_layer_fails(tmp_path: Path) -> None:
    image, out = copied(tmp_path)
    layer = out / "blobs" / "sha256" / image.layers[1].digest.removeprefix("sha256:")
    layer.write_bytes(layer.read_bytes()[:-1])
    error = check_copy(out, image)
    assert error is not None and image.layers[1].digest in error


def test_a_missing_config_fails(tmp_path: Path) -> None:
    image, out = copied(tmp_path)
    (out / "blobs" / "sha256" / image.config.digest.removeprefix("sha256:")).unlink()
    error = check_copy(out, image)
    assert error is not None and image.config.digest in error


def test_a_manifest_rewritten_by_the_client_fails(tmp_path: Path) -> None:
    image, out = copied(tmp_path)
    manifest = out / "blobs" / "sha256" / image.manifest.digest.removeprefix("sha256:")
    manifest.write_bytes(manifest.read_bytes().replace(b'"schemaVersion":2', b'"schemaVersion":3'))
    error = check_copy(out, image)
    assert error is not None and "other bytes" in error


def test_an_index_naming_another_manifest_fails(tmp_path: Path) -> None:
    image, out = copied(tmp_path)
    index = json.loads((out / "index.json").read_text())
    index["manifests"][0]["digest"] = image.config.digest
    (out / "index.json").write_text(json.dumps(index))
    error = check_copy(out, image)
    assert error is not None and "is not the pushed" in error
    (out / "index.json").unlink()
    assert "no index.json" in (check_copy(out, image) or "")


def test_the_client_keeps_the_layers_and_manifest_as_pushed_and_takes_layers_at_once() -> None:
    argv = Pull(Host("node1", "ns", "10.0.0.11", "v1"), "r:5000/app:1", Path("/o")).argv()
    assert "--preserve-digests" in argv and "--dest-oci-accept-uncompressed-layers" in argv
    assert argv[-1].startswith("oci:/o:")
