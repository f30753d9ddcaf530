"""A seeded tag resolved through the tracker while the tracker settles (it restarted, or the node
lost it a moment ago), on virtual time: the node asks again until the tag resolves or a stall
timeout has passed, and never longer than twice that."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

import pytest

from node.metrics import NodeMetrics
from node.p2p.pull import PullConfig
from node.p2p.swarm import Swarm
from tests.support.virtualclock import on_virtual_time
from tracker.client import Peer, Resolution
from tracker.errors import TrackerUnavailable

STALL = 10.0
REF = "registry.example/team/app:1"
FOUND = [Resolution("sha256:" + "a" * 64, 1, (Peer("node0", "", "", ""),), 1234)]


def now() -> float:
    return asyncio.get_running_loop().time()


@dataclass
class Tracker:
    """Knows the tag from `knows_at` on (loop time); unreachable before `answers_at`."""

    knows_at: float = math.inf
    answers_at: float = -math.inf
    asked_at: list[float] = field(default_factory=list)

    async def resolve(self, ref: str, node_id: str) -> list[Resolution]:
        self.asked_at.append(now())
        if now() < self.answers_at:
            raise TrackerUnavailable("connection refused")
        return FOUND if now() >= self.knows_at else []


@dataclass
class Membership:
    """Joined, or joins at `joins_at`; what the tracker knows may be incomplete until
    `settles_at` (loop times)."""

    client: Tracker
    joined: bool = True
    joins_at: float = math.inf
    settles_at: float = -math.inf
    embedded: bool = False
    node_id: str = "node1"

    def unsettled_for(self, grace: float) -> float:
        return max(0.0, self.settles_at - now())

    async def wait_joined(self, timeout: float) -> bool:
        if now() + timeout < self.joins_at:
            await asyncio.sleep(timeout)
            return False
        await asyncio.sleep(self.joins_at - now())
        self.joined = True
        return True


def swarm(membership: Membership) -> Swarm:
    swarm = Swarm(None, None, NodeMetrics(), PullConfig(stall_timeout=STALL))  # type: ignore[arg-type]
    swarm.attach(membership)  # type: ignore[arg-type]
    return swarm


@on_virtual_time
async def test_a_settled_node_asks_the_tracker_once() -> None:
    tracker = Tracker()
    assert await swarm(Membership(tracker)).resolve(REF) == []
    assert tracker.asked_at == [now()]


@on_virtual_time
async def test_a_tracker_that_came_back_empty_is_asked_until_it_learns_the_tag() -> None:
    start = now()
    tracker = Tracker(knows_at=start + 3.0)
    found = await swarm(Membership(tracker, settles_at=start + STALL)).resolve(REF)
    assert found == FOUND
    assert start + 3.0 <= now() <= start + 3.5
    assert len(tracker.asked_at) == 7  # every half second


@on_virtual_time
async def test_a_node_that_lost_its_tracker_waits_for_it_to_come_back() -> None:
    start = now()
    tracker = Tracker(knows_at=start + 2.5, answers_at=start + 2.0)
    membership = Membership(tracker, joined=False, joins_at=start + 2.0, settles_at=start + STALL)
    assert await swarm(membership).resolve(REF) == FOUND
    assert start + 2.5 <= now() <= start + 3.0
    assert tracker.asked_at[0] == pytest.approx(
        start + 2.0
    )  # not asked while the node was not joined


@on_virtual_time
async def test_a_tag_nobody_seeds_is_given_up_once_the_tracker_settled() -> None:
    start = now()
    tracker = Tracker()
    assert await swarm(Membership(tracker, settles_at=start + STALL)).resolve(REF) == []
    assert now() == pytest.approx(start + STALL)


@on_virtual_time
async def test_a_tracker_that_never_settles_is_waited_for_twice_the_stall_timeout_at_most() -> None:
    start = now()
    tracker = Tracker(answers_at=math.inf)
    assert await swarm(Membership(tracker, settles_at=math.inf)).resolve(REF) == []
    assert now() == pytest.approx(start + 2 * STALL)
    membership = Membership(tracker, joined=False, settles_at=math.inf)
    assert await swarm(membership).resolve(REF) == []
    assert now() == pytest.approx(start + 4 * STALL)
