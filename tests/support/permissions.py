"""Permissions as a non-root process meets them, for tests that run as root.

Root may read and write anything: a process started under `NO_DAC` (setpriv dropping
CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH) is still uid 0 but finds a file or directory owned by
another uid as closed as the container's uid 10001 does.
"""

from __future__ import annotations

import os
from pathlib import Path

OTHER_UID = 10001  # the container's user: not the tests'
NO_DAC = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]


def foreign(path: Path, mode: int) -> Path:
    """Give `path` to another uid, with `mode`."""
    os.chown(path, OTHER_UID, OTHER_UID)
    path.chmod(mode)
    return path
