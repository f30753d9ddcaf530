"""The images directory is watched: archives added later are seeded, removed ones unpinned,
changed ones imported again; one tag in two archives resolves by a fixed rule."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.seed import SeedConfig, Seeds
from node.seed.progress import Progress
from node.store.contentstore import ContentStore
from node.store.memory import MemoryBlobs
from node.store.metadata import Metadata
from tests.support.images import LayerSpec, OciImage, build_image
from tests.unit.test_seed_import import APP, Seeder, layout_files, logged, oci_image, pack

ARCHIVE_AGE = 60.0


def aged(path: Path) -> Path:
    """An archive written a minute ago: settled, imported at the first scan."""
    then = time.time() - ARCHIVE_AGE
    os.utime(path, (then, then))
    return path


def archived(tmp_path: Path) -> tuple[OciImage, Path]:
    """An image packed as `images/app.tar`, settled: the image, and the images directory."""
    image = oci_image(tmp_path)
    images = tmp_path / "images"
    aged(pack(layout_files(image.layout), images / "app.tar"))
    return image, images


@pytest.fixture
async def seeder(tmp_path: Path) -> AsyncIterator[Seeder]:
    seeder = Seeder(tmp_path / "images")
    seeder.images.mkdir()
    yield seeder
    seeder.store.close()


async def test_an_archive_added_later_is_seeded_once_it_is_completely_written(
    seeder: Seeder, tmp_path: Path
) -> None:
    changes: list[None] = []
    seeder.seeds.on_change = lambda: changes.append(None)
    await seeder.seeds.sync()
    image = oci_image(tmp_path)
    pack(layout_files(image.layout), seeder.images / "app.tar")
    await seeder.seeds.sync()
    assert seeder.lookup(APP) is None  # just written: it may still be growing
    await seeder.seeds.sync()
    assert seeder.lookup(APP) == image.digest
    assert len(changes) == 1


async def test_a_removed_archive_is_unpinned_and_its_blobs_become_evictable(
    tmp_path: Path,
) -> None:
    image, images = archived(tmp_path)
    quota = sum(image.blobs.values()) + image.top.size + 1000
    store = ContentStore.memory(max_bytes=quota, low_watermark=0.5)
    seeds = Seeds(images, store, SeedConfig())
    await seeds.sync()
    assert seeds.lookup("docker.io", "test/app", "1") == image.digest
    filler = os.urandom(quota // 2)
    await store.put("sha256:" + __import__("hashlib").sha256(filler).hexdigest(), filler)
    assert all(store.stat(d) for d in image.blobs), "a pinned blob was evicted"
    (images / "app.tar").unlink()
    await seeds.sync()
    assert seeds.lookup("docker.io", "test/app", "1") is None
    assert seeds.refs() == [] and seeds.archives() == []
    assert not any(store.pinned(d) for d in image.blobs)
    assert store.evict() > 0 and not all(store.stat(d) for d in image.blobs)
    store.close()


async def test_a_changed_archive_is_imported_again(seeder: Seeder, tmp_path: Path) -> None:
    first = oci_image(tmp_path, seed="first")
    second = oci_image(tmp_path, seed="second")
    archive = aged(pack(layout_files(first.layout), seeder.images / "app.tar"))
    await seeder.seeds.sync()
    assert seeder.lookup(APP) == first.digest
    aged(pack(layout_files(second.layout), archive))
    await seeder.seeds.sync()
    assert seeder.lookup(APP) == second.digest
    assert seeder.store.pinned(second.image().layers[0].digest)
    assert not seeder.store.pinned(first.image().layers[0].digest)


async def test_a_layout_directory_changed_in_place_is_imported_again(
    seeder: Seeder, tmp_path: Path
) -> None:
    layout = seeder.images / "app"
    first = build_image(layout, APP, [LayerSpec(1000)], seed="one")
    await seeder.settle()
    assert seeder.lookup(APP) == first.digest
    second = build_image(layout, APP, [LayerSpec(2000)], seed="two")
    await seeder.settle()
    assert seeder.lookup(APP) == second.digest


async def test_an_archive_that_breaks_loses_its_tags_and_a_fixed_one_is_seeded(
    seeder: Seeder, tmp_path: Path
) -> None:
    image = oci_image(tmp_path)
    archive = aged(pack(layout_files(image.layout), seeder.images / "app.tar"))
    await seeder.seeds.sync()
    good = archive.read_bytes()
    aged(archive).write_bytes(good[: len(good) // 2])
    aged(archive)
    await seeder.seeds.sync()
    assert "app.tar" in seeder.seeds.failures()
    assert seeder.lookup(APP) is None
    assert not seeder.store.pinned(image.digest)
    archive.write_bytes(good)
    aged(archive)
    await seeder.seeds.sync()
    assert seeder.seeds.failures() == {}
    assert seeder.lookup(APP) == image.digest


async def test_the_same_tag_in_two_archives_resolves_to_the_last_by_path(
    seeder: Seeder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    older = oci_image(tmp_path, seed="older")
    newer = oci_image(tmp_path, seed="newer")
    aged(pack(layout_files(newer.layout), seeder.images / "app-2.tar"))
    aged(pack(layout_files(older.layout), seeder.images / "app-1.tar"))
    with caplog.at_level(logging.WARNING):
        await seeder.seeds.sync()
    assert seeder.lookup(APP) == newer.digest
    conflict = [r for r in caplog.records if "same tag" in r.getMessage()]
    assert [getattr(r, "winner", None) for r in conflict] == ["app-2.tar"]
    assert getattr(conflict[0], "archives", None) == "app-1.tar,app-2.tar"
    (seeder.images / "app-2.tar").unlink()
    await seeder.seeds.sync()
    assert seeder.lookup(APP) == older.digest
    # Both archives' blobs stay pinned while both exist; now only the older one's.
    assert seeder.store.pinned(older.digest) and not seeder.store.pinned(newer.digest)


async def test_hidden_files_and_partial_layouts_are_left_alone(
    seeder: Seeder, tmp_path: Path
) -> None:
    image = oci_image(tmp_path)
    aged(pack(layout_files(image.layout), seeder.images / ".app.tar.part"))
    partial = seeder.images / "partial"
    shutil.copytree(image.layout, partial)
    (partial / "index.json").unlink()  # skopeo writes index.json last
    await seeder.settle()
    assert seeder.seeds.failures() == {} and seeder.seeds.archives() == []


async def test_run_seeds_at_start_then_watches(seeder: Seeder, tmp_path: Path) -> None:
    first = oci_image(tmp_path, seed="first")
    aged(pack(layout_files(first.layout), seeder.images / "first.tar"))
    task = asyncio.create_task(seeder.seeds.run())
    await asyncio.wait_for(seeder.seeds.ready.wait(), 10)
    assert seeder.lookup(APP) == first.digest
    later = oci_image(tmp_path, tag="docker.io/test/later:1", seed="later")
    pack(layout_files(later.layout), seeder.images / "later.tar")
    deadline = time.monotonic() + 10
    while seeder.lookup("docker.io/test/later:1") is None:
        assert time.monotonic() < deadline, "an archive added later was never seeded"
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_event_loop_keeps_serving_during_a_large_import(
    seeder: Seeder, tmp_path: Path
) -> None:
    image = build_image(tmp_path / "big", APP, [LayerSpec(24 << 20)], seed="big")
    aged(pack(layout_files(image.layout), seeder.images / "big.tar"))
    ticks = 0
    importing = asyncio.create_task(seeder.seeds.sync())
    while not importing.done():
        ticks += 1
        await asyncio.sleep(0)
    await importing
    assert seeder.lookup(APP) == image.digest
    assert ticks >= 24, f"the event loop ran only {ticks} times during a 24 MiB import"


async def test_pins_of_archives_removed_while_the_node_was_down_are_released(
    tmp_path: Path,
) -> None:
    image, images = archived(tmp_path)
    store = ContentStore.open(tmp_path / "data")
    await Seeds(images, store, SeedConfig()).sync()
    store.close()
    (images / "app.tar").unlink()
    store = ContentStore.open(tmp_path / "data")
    seeds = Seeds(images, store, SeedConfig(seed_scan_interval=0.05))
    task = asyncio.create_task(seeds.run())
    await asyncio.wait_for(seeds.ready.wait(), 10)
    task.cancel()
    assert not store.pinned(image.digest)
    store.close()


def test_a_long_import_logs_its_progress(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress("big.tar", 4 << 20, interval=0)
    with caplog.at_level(logging.INFO):
        progress.add(1 << 20)
    assert logged(caplog, "importing archive", "big.tar")
    [record] = caplog.records
    assert (record.__dict__["done_bytes"], record.__dict__["percent"]) == (1 << 20, 25.0)


async def test_an_archive_holding_a_damaged_blob_is_imported_again(
    seeder: Seeder, tmp_path: Path
) -> None:
    image = oci_image(tmp_path)
    aged(pack(layout_files(image.layout), seeder.images / "app.tar"))
    await seeder.seeds.sync()
    layer = image.image().layers[0].digest
    assert not seeder.seeds.reimport("sha256:" + "0" * 64)  # no archive holds that
    seeder.store.delete(layer)  # found damaged and purged
    assert seeder.seeds.reimport(layer)
    assert seeder.lookup(APP) == image.digest  # its tags stay served meanwhile
    await seeder.seeds.sync()
    assert seeder.store.stat(layer) is not None
    assert seeder.store.pinned(layer)
    assert seeder.lookup(APP) == image.digest


async def test_an_archive_whose_name_is_not_utf8_is_skipped_and_the_rest_seeded(
    tmp_path: Path,
) -> None:
    """A file name of bytes that are not UTF-8 (copied from a host with another locale): its
    import raised on every scan (SQLite takes only UTF-8) and the node never became ready."""
    image, images = archived(tmp_path)
    odd = images / os.fsdecode(b"caf\xe9.tar")
    aged(pack(layout_files(image.layout), odd))
    store = ContentStore(MemoryBlobs(), Metadata(tmp_path / "metadata.sqlite"))
    seeds = Seeds(images, store, SeedConfig(seed_scan_interval=0.05))
    running = asyncio.create_task(seeds.run())
    try:
        await asyncio.wait_for(seeds.ready.wait(), 10)
    finally:
        running.cancel()
    assert seeds.lookup("docker.io", "test/app", "1") == image.digest
    [skipped] = seeds.skipped()
    assert skipped.name == "caf\\xe9.tar"  # printable, as the status page shows it
    assert "not UTF-8" in skipped.reason and "rename" in skipped.fix
    store.close()
