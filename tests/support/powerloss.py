"""What a power loss does to files, applied after a process is killed.

A power loss loses what the kernel had not yet written back: pages still dirty in the page cache.
The kernel says which pages of a file are dirty (`cachestat`, Linux 6.5); every file under a
directory with dirty pages loses its content, as delayed allocation leaves it (zeroed at its full
size) or as a journal that had not committed the new size leaves it (truncated). A file the
process fsynced has no dirty pages left and keeps its content.

    lost = lose_unsynced(node.data_dir, "zeroed")   # the files that lost their content
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

CACHESTAT = 451  # the syscall's number, the same on x86-64 and arm64
MODES = ("zeroed", "truncated")


class _Range(ctypes.Structure):
    _fields_ = [("offset", ctypes.c_uint64), ("length", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("cache", "dirty", "writeback", "evicted", "recently_evicted")
    ]


_libc = ctypes.CDLL(None, use_errno=True)


def dirty_pages(path: Path) -> int:
    """Pages of the file not yet written back (dirty or under writeback)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        whole, stat = _Range(0, 0), _Stat()
        if _libc.syscall(CACHESTAT, fd, ctypes.byref(whole), ctypes.byref(stat), 0) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"cachestat({path}): {os.strerror(error)}")
        return int(stat.dirty + stat.writeback)
    finally:
        os.close(fd)


def lose_unsynced(root: Path, mode: str) -> list[Path]:
    """Every regular file under `root` with pages not written back loses its content
    (`zeroed` at its size, or `truncated`); returns those files."""
    assert mode in MODES, mode
    lost = []
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            if path.is_symlink() or not path.is_file() or not dirty_pages(path):
                continue
            size = path.stat().st_size
            with path.open("r+b") as f:
                f.truncate(0)
                if mode == "zeroed":
                    f.truncate(size)  # a hole reads as zeros, as unwritten extents do
                os.fsync(f.fileno())
            lost.append(path)
    return lost
