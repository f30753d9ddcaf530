"""Archives that would exhaust a node are refused before they are written: a decompression bomb,
and an archive larger than the store's quota. The node goes on seeding the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_seed_node import LAYERS, _node, manifest
from tests.support.images import LayerSpec, build_image
from tests.support.node import Node
from tests.unit.test_seed_import import bomb, layout_files, pack

pytestmark = pytest.mark.integration

MiB = 1 << 20
QUOTA = 24 * MiB


def _written(node: Node) -> int:
    """Bytes the node's process has written to storage (page cache dirtied included)."""
    text = Path(f"/proc/{node.pid}/io").read_text()
    return int(dict(line.split(": ") for line in text.splitlines())["write_bytes"])


def test_a_bomb_and_an_archive_over_the_quota_are_skipped_before_they_are_written(
    node_command: None, tmp_path: Path
) -> None:
    images_dir = tmp_path / "images"
    small = build_image(tmp_path / "src" / "small", "1", [LayerSpec(1000)], seed="bomb")
    archive = bomb(small, images_dir / "bomb.tar.zst", 128 * MiB)
    assert archive.stat().st_size < 16 << 10
    large = build_image(tmp_path / "src" / "large", "1", [LayerSpec(40 * MiB)], seed="large")
    pack(layout_files(large.layout), images_dir / "large.tar")
    good = build_image(tmp_path / "src" / "good", "docker.io/test/good:1", LAYERS, seed="good")
    pack(layout_files(good.layout), images_dir / "good.tar")

    node = _node(tmp_path / "node", images_dir, None, "--cache-max-bytes", str(QUOTA))
    node.start()  # ready: every archive found at start is seeded or skipped
    try:
        assert manifest(node, "docker.io/test/good:1") == (200, good.digest)
        log = node.log_path.read_text()
        skipped = [line for line in log.splitlines() if 'msg="archive skipped"' in line]
        assert len(skipped) == 2, skipped
        assert any("bomb.tar.zst" in line and "decompression bomb" in line for line in skipped)
        assert any("large.tar" in line and "quota" in line for line in skipped)
        # Neither was written: what the node wrote is its metadata, its log and the good
        # archive, a few MiB, where the bomb alone used to write 128 MiB.
        assert _written(node) < 16 * MiB, _written(node)
        for digest in large.blobs:
            assert node.stored_paths(digest) == [], digest
    finally:
        node.stop()
        print(node.log_tail())
