"""`distributed-images preheat`: place an image on chosen nodes ahead of a rollout.

The tracker picks the nodes (all, a count by rendezvous hashing, or a zone's) and sends each a
task over its Tasks stream; with `--wait` this command follows the task until every node is done
or failed and exits non-zero if any failed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field

from distributed_images.logs import level_field
from tracker.client import Connection, PreheatProgress, TaskState, TrackerClient
from tracker.errors import TrackerError

HELP = "pull an image onto chosen nodes ahead of a rollout"
POLL_SECONDS = 0.5


@dataclass
class Config:
    image: str = field(
        default="",
        metadata={
            "positional": True,
            "metavar": "IMAGE",
            "help": "e.g. docker.io/library/nginx:1.25",
        },
    )
    connection: Connection = field(default_factory=Connection)
    nodes: str = field(
        default="all", metadata={"help": "all, or how many nodes", "metavar": "all|N"}
    )
    zone: str = field(default="", metadata={"help": "only nodes of this zone", "metavar": "NAME"})
    wait: bool = field(default=False, metadata={"help": "wait until every node is done"})
    deadline: float = field(
        default=3600.0,
        metadata={"above": 0, "help": "seconds the nodes get to finish", "metavar": "S"},
    )
    log_level: str = level_field("warning")


def node_count(text: str) -> int:
    """`all` is 0 (every node); otherwise a positive count."""
    if text.strip().lower() == "all":
        return 0
    if not text.strip().isdigit() or int(text) <= 0:
        raise ValueError(f"--nodes takes 'all' or a positive number, not {text!r}")
    return int(text)


async def run(config: Config) -> int:
    count = node_count(config.nodes)
    client = config.connection.client()
    try:
        ticket = await client.preheat(config.image, count, config.zone, config.deadline)
        print(f"preheat {ticket.task_id}: {config.image} on {len(ticket.targets)} nodes")
        for node_id in ticket.targets:
            print(f"  {node_id}")
        if not config.wait:
            return 0
        progress = await follow(client, ticket.task_id, time.monotonic() + config.deadline + 5)
    finally:
        await client.close()
    failed = [t for t in progress.targets if t.state is not TaskState.DONE]
    done = len(progress.targets) - len(failed)
    print(f"preheat {ticket.task_id}: {done} done, {len(failed)} failed")
    return 1 if failed else 0


async def follow(client: TrackerClient, task_id: str, deadline: float) -> PreheatProgress:
    """Poll until every target finished (printing each as it does) or the deadline passes."""
    reported: set[str] = set()
    while True:
        progress = await client.preheat_status(task_id)
        for target in progress.targets:
            finished = target.state in (TaskState.DONE, TaskState.FAILED)
            if finished and target.node_id not in reported:
                reported.add(target.node_id)
                detail = f": {target.message}" if target.message else ""
                print(f"  {target.node_id}: {target.state.name.lower()}{detail}")
        if progress.finished or time.monotonic() > deadline:
            return progress
        await asyncio.sleep(POLL_SECONDS)


def main(config: Config) -> int:
    try:
        return asyncio.run(run(config))
    except ValueError as e:
        print(f"preheat: {e}", file=sys.stderr)
        return 2
    except TrackerError as e:
        print(f"preheat: {e.message}", file=sys.stderr)
        return 1
