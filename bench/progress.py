"""What the harness shows while it runs: one line per phase and per finished pull, on stderr.

On a terminal a live status line is redrawn below them (pulls done, time so far as a multiple
of the bound, upstream bytes so far); elsewhere (CI, a pipe) only the plain lines are written.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.start = time.monotonic()
        self._status = False

    def line(self, text: str) -> None:
        self._clear()
        elapsed = time.monotonic() - self.start
        self.stream.write(f"[{_clock(elapsed)}] {text}\n")
        self.stream.flush()

    def status(self, text: str) -> None:
        if not self.live:
            return
        width = shutil.get_terminal_size().columns - 1
        self.stream.write("\r\033[K" + text[:width])
        self.stream.flush()
        self._status = True

    def _clear(self) -> None:
        if self._status:
            self.stream.write("\r\033[K")
            self._status = False


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes:02d}:{rest:02d}"
