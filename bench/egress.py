"""When the upstream sent a run's bytes: its interface counter sampled as the pulls are polled.

A cold pull's time splits into the wait before the upstream's first blob bytes leave, the time
the upstream takes to send them (against S/U, the rate its link allows), and the tail after its
last byte, while the last chunks travel between peers and clients finish. The run's notes give
the first two ends, so a ratio above the bound says which part it came from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

NOISE = 256 << 10  # bytes: manifests, configs and HEAD answers stay under this


def counter(pid: int) -> Callable[[], int]:
    """A cheap reader of the bytes sent by eth0 in the network namespace of process `pid`:
    `/proc/<pid>/net/dev` shows that namespace's interfaces, with no process to start."""
    path = Path(f"/proc/{pid}/net/dev")

    def read() -> int:
        for line in path.read_text().splitlines():
            name, _, fields = line.partition(":")
            if name.strip() == "eth0":
                return int(fields.split()[8])  # receive has eight columns, then transmit bytes
        raise LookupError(f"no eth0 in {path}")

    return read


class Egress:
    """Samples of the upstream's sent bytes against the seconds since the pulls started."""

    def __init__(self, read: Callable[[], int]) -> None:
        self._read = read
        self._start = read()
        self._samples: list[tuple[float, int]] = []

    def sample(self, elapsed: float) -> int:
        """Take a sample; the bytes sent since the start."""
        sent = self._read() - self._start
        self._samples.append((elapsed, sent))
        return sent

    def figures(self, blob_bytes: int) -> dict[str, float]:
        """When the first and the last blob bytes left, if at least half the image did (a warm
        run sends nothing worth timing)."""
        if not self._samples:
            return {}
        sent = self._samples[-1][1]
        if sent < blob_bytes // 2:
            return {}
        first = next(t for t, n in self._samples if n >= NOISE)
        last = next(t for t, n in self._samples if n >= sent - NOISE)
        return {"upstream_first_byte_seconds": first, "upstream_last_byte_seconds": last}
