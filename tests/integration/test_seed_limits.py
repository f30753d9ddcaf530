"""Archives that would exhaust a node are refused before they are written: a decompression bomb,
and an archive larger than the store's quota. The node goes on seeding the rest, and seeds one
that did not fit once there is room for it: the fix its reason names needs no other step."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.test_seed_node import LAYERS, _node, manifest
from tests.support import disks
from tests.support.images import LayerSpec, build_image
from tests.support.node import Node
from tests.support.process import wait_until
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


def _skipped(node: Node, archive: str, why: str) -> bool:
    log = node.log_path.read_text()
    return any(
        f"archive={archive}" in line and why in line
        for line in log.splitlines()
        if 'msg="archive skipped"' in line
    )


def _seed_when_room(
    tmp_path: Path,
    why: str,
    make_room: Callable[[Path], None],
    *node_args: str,
    data_dir: Path | None = None,
) -> None:
    """`first.tar` is seeded, `second.tar` added later does not fit (`why` in the reason),
    `make_room(images_dir)`: `second.tar`, unchanged, is then seeded (the node's store in
    `data_dir` if given)."""
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    first = build_image(
        tmp_path / "src" / "1", "docker.io/test/first:1", [LayerSpec(14 * MiB)], seed="first"
    )
    second = build_image(
        tmp_path / "src" / "2", "docker.io/test/second:1", [LayerSpec(14 * MiB)], seed="second"
    )
    pack(layout_files(first.layout), images_dir / "first.tar")
    node = _node(tmp_path / "node", images_dir, None, *node_args, data_dir=data_dir)
    node.start()
    try:
        assert manifest(node, "docker.io/test/first:1") == (200, first.digest)
        pack(layout_files(second.layout), tmp_path / "second.tar")
        (tmp_path / "second.tar").rename(images_dir / "second.tar")
        wait_until(lambda: _skipped(node, "second.tar", why), 30, "second.tar skipped")
        assert manifest(node, "docker.io/test/second:1")[0] != 200
        make_room(images_dir)
        wait_until(
            lambda: manifest(node, "docker.io/test/second:1") == (200, second.digest),
            30,
            "second.tar seeded once there is room",
        )
    except BaseException:
        print(node.log_tail())
        raise
    finally:
        node.stop()


def test_an_archive_over_the_quota_is_seeded_once_another_archive_is_removed(
    node_command: None, tmp_path: Path
) -> None:
    def remove_first(images_dir: Path) -> None:
        (images_dir / "first.tar").unlink()

    _seed_when_room(tmp_path, "quota", remove_first, "--cache-max-bytes", str(QUOTA))


def test_an_archive_the_full_disk_cannot_take_is_seeded_once_the_disk_has_room(
    node_command: None, tmp_path: Path
) -> None:
    with disks.tmpfs(tmp_path / "disk", 64 * MiB) as disk:
        filler = disk / "filler"
        disks.fill(filler, leave=24 * MiB)  # room for first.tar, not for second.tar too
        _seed_when_room(tmp_path, "disk", lambda _: filler.unlink(), data_dir=disk / "data")
