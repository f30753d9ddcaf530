"""When a tracker client that left a replica counts as attached to the next, and the time that
took: a call answered there and every stream open there."""

from __future__ import annotations

from tracker.attachment import Attachment


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def attachment() -> tuple[Attachment, Clock, list[float]]:
    clock, reported = Clock(), []
    return Attachment(reported.append, clock), clock, reported


def test_a_client_that_never_moved_reports_nothing() -> None:
    a, _, reported = attachment()
    a.opened("watch", 0)
    a.answered(0)
    assert reported == [] and not a.moving


def test_the_move_ends_when_the_last_stream_is_open_on_the_new_replica() -> None:
    a, clock, reported = attachment()
    a.opened("tasks", 0)
    a.opened("watch", 0)
    a.moved(1)
    clock.now += 0.5
    a.answered(1)
    a.opened("tasks", 1)
    assert reported == [] and a.moving  # the watch is still on the old replica
    clock.now += 1.0
    a.opened("watch", 1)
    assert reported == [1.5] and not a.moving
    a.answered(1)
    assert reported == [1.5]  # once per move


def test_streams_alone_do_not_make_a_move_without_an_answered_call() -> None:
    a, clock, reported = attachment()
    a.opened("tasks", 0)
    a.moved(1)
    a.opened("tasks", 1)
    a.answered(0)  # a late answer from the replica left behind
    assert reported == []
    clock.now += 2
    a.answered(1)
    assert reported == [2.0]


def test_a_stream_that_ends_is_not_waited_for() -> None:
    a, clock, reported = attachment()
    a.opened("watch", 0)
    a.moved(1)
    a.answered(1)
    clock.now += 3
    a.closed("watch")
    assert reported == [3.0]


def test_moving_on_again_before_arriving_keeps_the_first_departure() -> None:
    a, clock, reported = attachment()
    a.moved(1)
    clock.now += 4
    a.moved(2)  # the next replica failed too
    a.answered(1)
    assert reported == []
    clock.now += 1
    a.answered(2)
    assert reported == [5.0]
