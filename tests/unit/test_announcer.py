"""Chunk announcements noted together go to the tracker in one call; a fake stands in for the
tracker client."""

from __future__ import annotations

import asyncio

from node.p2p import announcer as announcer_module
from node.p2p.announcer import Announcer
from tracker.client import HeldBlob
from tracker.errors import TrackerError

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


class Tracker:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[HeldBlob]] = []
        self.fail = fail

    async def announce(self, node_id: str, blobs: list[HeldBlob]) -> None:
        self.calls.append(list(blobs))
        if self.fail:
            raise TrackerError("unavailable")


async def settle() -> None:
    await asyncio.sleep(announcer_module.WINDOW * 3)


async def test_what_is_noted_together_goes_in_one_call() -> None:
    tracker = Tracker()
    announcer = Announcer(tracker, "n1")  # type: ignore[arg-type]
    for chunk in range(5):
        announcer.note(A, 50 << 20, 5, partial=(chunk,))
    announcer.note(B, 4 << 20, 1, complete=(0,))
    announcer.note(A, 50 << 20, 5, complete=(2,))
    await settle()
    assert tracker.calls == [
        [HeldBlob(A, 50 << 20, 5, (2,), (0, 1, 3, 4)), HeldBlob(B, 4 << 20, 1, (0,), ())]
    ]
    announcer.note(A, 50 << 20, 5, complete=(0,))
    await settle()
    assert tracker.calls[1:] == [[HeldBlob(A, 50 << 20, 5, (0,), ())]]


async def test_a_forgotten_blob_is_not_announced() -> None:
    tracker = Tracker()
    announcer = Announcer(tracker, "n1")  # type: ignore[arg-type]
    announcer.note(A, 50 << 20, 5, partial=(0,))
    announcer.forget(A)
    await settle()
    assert tracker.calls == []


async def test_a_failed_call_is_no_error_and_the_next_notes_go_on() -> None:
    tracker = Tracker(fail=True)
    announcer = Announcer(tracker, "n1")  # type: ignore[arg-type]
    announcer.note(A, 50 << 20, 5, partial=(0,))
    await settle()
    tracker.fail = False
    announcer.note(A, 50 << 20, 5, complete=(0,))
    await settle()
    assert [call[0].chunks for call in tracker.calls] == [(), (0,)]
    await announcer.close()
