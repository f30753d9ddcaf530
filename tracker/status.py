"""`distributed-images status`: the cluster as the tracker sees it (nodes, blobs, leases)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from distributed_images.logs import level_field
from tracker.client import ClusterStatus, Connection
from tracker.errors import TrackerError

HELP = "show the cluster's nodes, blobs and leases as the tracker sees them"


@dataclass
class Config:
    connection: Connection = field(default_factory=Connection)
    json: bool = field(default=False, metadata={"help": "print one JSON object"})
    blobs: bool = field(default=False, metadata={"help": "list blobs and their swarms too"})
    max_blobs: int = field(
        default=1000, metadata={"min": 1, "help": "blobs to list at most", "metavar": "N"}
    )
    log_level: str = level_field("warning")


def as_json(status: ClusterStatus, tracker: str) -> dict[str, Any]:
    """The JSON contract of DESIGN section 6: `nodes[]` with `id`, `registry`, `peer`, `zone`,
    `blobs` (how many blobs a node holds chunks of), and more."""
    out: dict[str, Any] = {
        "tracker": tracker,
        "tracker_instance": status.tracker_instance,
        "uptime_seconds": round(status.uptime_seconds, 3),
        "replica": status.replica,
        "replicas": [dataclasses.asdict(r) for r in status.replicas],
        "nodes": [dataclasses.asdict(n) for n in status.nodes],
        "totals": {
            "nodes": len(status.nodes),
            "blobs": status.blob_count,
            "chunks": status.chunk_count,
            "leases": status.lease_count,
            "preheat_tasks": status.preheat_tasks,
        },
    }
    if status.blobs or status.blobs_truncated:
        out["blobs"] = [dataclasses.asdict(b) for b in status.blobs]
        out["blobs_truncated"] = status.blobs_truncated
    return out


def write_table(status: ClusterStatus, tracker: str, out: TextIO) -> None:
    out.write(
        f"tracker {tracker} (instance {status.tracker_instance}, up {status.uptime_seconds:.0f} s):"
        f" {len(status.nodes)} nodes, {status.blob_count} blobs, {status.chunk_count} chunks,"
        f" {status.lease_count} leases, {status.preheat_tasks} preheat tasks,"
        f" {len(status.replicas)} live tracker replicas\n"
    )
    rows: list[tuple[str, ...]] = [
        ("NODE", "REGISTRY", "PEER", "ZONE", "BLOBS", "CHUNKS", "LEASES", "SEEN")
    ]
    for n in status.nodes:
        seen = f"{n.seconds_since_heartbeat:.0f}s ago"
        cells = (n.id, n.registry, n.peer, n.zone or "-", n.blobs, n.chunks, n.leases, seen)
        rows.append(tuple(str(v) for v in cells))
    _write_rows(rows, out)
    if status.replicas:
        out.write("\n")
        rows = [("REPLICA", "ADDRESS", "UP")]
        for r in status.replicas:
            answered = " (answered)" if r.instance == status.replica else ""
            rows.append((r.instance + answered, r.address, f"{r.uptime_seconds:.0f}s"))
        _write_rows(rows, out)
    if status.blobs:
        out.write("\n")
        rows = [("BLOB", "SIZE", "CHUNKS", "PUBLISHED", "HOLDERS", "SWARM", "LEASES")]
        for b in status.blobs:
            swarm = f"{b.min_swarm}-{b.max_swarm}"
            values = (b.digest, b.size, b.chunk_count, b.published, b.holders, swarm, b.leases)
            rows.append(tuple(str(v) for v in values))
        _write_rows(rows, out)
        if status.blobs_truncated:
            out.write(f"... {status.blob_count - len(status.blobs)} more blobs\n")


def _write_rows(rows: list[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


async def fetch(config: Config) -> ClusterStatus:
    client = config.connection.client()
    try:
        return await client.status(config.blobs, config.max_blobs)
    finally:
        await client.close()


def main(config: Config) -> int:
    try:
        status = asyncio.run(fetch(config))
    except TrackerError as e:
        print(f"status: {config.connection.tracker or 'tracker'}: {e.message}", file=sys.stderr)
        return 1
    tracker = config.connection.tracker or ""
    if config.json:
        json.dump(as_json(status, tracker), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        write_table(status, tracker, sys.stdout)
    return 0
