"""The bounded map of recent hints: the newest entries stay, the oldest go past the limit."""

from __future__ import annotations

from distributed_images.recent import Recent


def test_the_oldest_entries_go_past_the_limit_and_remembering_again_renews() -> None:
    recent: Recent[str, int] = Recent(2)
    recent.remember("a", 1)
    recent.remember("b", 2)
    recent.remember("a", 3)  # a is the newest now
    recent.remember("c", 4)
    assert len(recent) == 2
    assert "b" not in recent and recent.get("a") == 3 and recent.get("c") == 4
    assert recent.pop("a") == 3 and recent.pop("a") is None and len(recent) == 1
