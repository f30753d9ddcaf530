"""How long each node of p2p-cold-failover took to move to the surviving tracker replica: from
the moment the benchmark SIGKILLed the replica to the node's log line saying it moved ("moved to
another tracker replica", written once the other replica answered its calls and its task stream
and pulls' watches are open there), in seconds and in heartbeat intervals (the issue's goal:
within two). The nodes and the benchmark share one clock; a log time is to the millisecond.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.cluster import Agent
from tracker.policy import Policy

MOVED = "moved to another tracker replica"
HEARTBEAT_INTERVAL = Policy().heartbeat_interval  # the replicas run with the default
_STAMP = re.compile(r"^ts=(\S+) ")


def moved_after(log: Path, since: float) -> float | None:
    """Seconds from `since` (epoch seconds) to the first move the log records at or after it."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        stamp = _STAMP.match(line)
        if stamp is None or MOVED not in line:
            continue
        at = datetime.strptime(stamp[1], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        if at >= since - 0.001:
            return at - since
    return None


def reattach_times(
    agents: Sequence[Agent], movers: Sequence[Agent], killed_at: float, wait: float
) -> dict[str, object]:
    """Each node's time to move (None: it never did), for the `movers` that knew the killed
    replica first, waiting up to `wait` seconds for their lines, and for any other node that
    moved too; the largest of them in heartbeat intervals (of the nodes that moved: those that
    never did are counted apart)."""
    deadline = time.monotonic() + wait
    seconds: dict[str, float | None] = {}
    while True:
        for agent in agents:
            seconds[agent.host.name] = moved_after(agent.daemon.log_path, killed_at)
        waiting = [a for a in movers if seconds[a.host.name] is None]
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    expected = {a.host.name for a in movers}
    shown = {name: s for name, s in seconds.items() if name in expected or s is not None}
    known = [s for s in shown.values() if s is not None]
    never = sorted(name for name, s in shown.items() if s is None)
    # A node that never moved has no time: the largest is then unknown, not the others' largest.
    worst = None if never or not known else max(known) / HEARTBEAT_INTERVAL
    return {
        "reattach_seconds": {name: _round(s) for name, s in shown.items()},
        "reattach_never": never,
        "reattach_never_count": len(never),
        "heartbeat_interval_seconds": HEARTBEAT_INTERVAL,
        "reattach_max_heartbeats": _round(worst),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
