"""Disks that fail the ways real ones do, for a node's data dir: a small one that fills up
(tmpfs), and directories that turn read-only."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def tmpfs(mountpoint: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes on `mountpoint` (made if need be) while in the block; unmounted
    lazily after it (a node stopped a moment later may still hold a file there)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)], check=True
    )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "--lazy", str(mountpoint)], check=True)


def fill(path: Path, leave: int = 0) -> None:
    """Fill the disk `path` is on with it, to the last byte, or until `leave` bytes are free."""
    block = b"\xff" * (1 << 20)
    with path.open("wb", buffering=0) as f:
        while True:
            if leave and shutil.disk_usage(path).free - len(block) < leave:
                return
            try:
                f.write(block)
            except OSError:
                block = block[: len(block) // 2]
                if not block:
                    return


@contextmanager
def read_only(*directories: Path) -> Iterator[None]:
    """The directories read-only (bind-mounted onto themselves so) while in the block."""
    for directory in directories:
        subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True)
    try:
        yield
    finally:
        for directory in directories:
            subprocess.run(["umount", str(directory)], check=True)
