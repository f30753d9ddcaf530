"""What the status page shows of a node's activity: bytes by source in time buckets, and pulls
grouped from requests; both stay bounded whatever clients do."""

from __future__ import annotations

from node.activity import (
    BUCKET_SECONDS,
    BUCKETS,
    IDLE_SECONDS,
    MAX_FINISHED,
    MAX_OPEN,
    Pulls,
    Traffic,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_traffic_is_bucketed_by_time_and_forgets_what_is_older_than_its_window() -> None:
    clock = Clock()
    traffic = Traffic(clock)
    traffic.add("peer", 100)
    traffic.add("peer", 50)
    traffic.add("upstream", 7)
    clock.now += BUCKET_SECONDS
    traffic.add("cache", 3)
    buckets = traffic.buckets()
    assert len(buckets) == BUCKETS
    assert buckets[-2] == {"cache": 0, "peer": 150, "upstream": 7, "seed": 0}
    assert buckets[-1] == {"cache": 3, "peer": 0, "upstream": 0, "seed": 0}
    clock.now += BUCKET_SECONDS * BUCKETS
    assert all(sum(b.values()) == 0 for b in traffic.buckets())
    for _ in range(10 * BUCKETS):  # however long it runs, it holds one window
        clock.now += BUCKET_SECONDS
        traffic.add("seed", 1)
    assert len(traffic._buckets) == BUCKETS
    assert sum(b["seed"] for b in traffic.buckets()) == BUCKETS


def test_a_pull_gathers_the_manifests_and_blobs_of_one_client_and_repository() -> None:
    clock = Clock()
    pulls = Pulls(clock, wall=lambda: 0.0)
    pulls.manifest("10.0.0.1", "docker.io", "library/app", "1")
    clock.now += 0.5
    pulls.manifest("10.0.0.1", "docker.io", "library/app", "sha256:" + "a" * 64)
    pulls.blob("10.0.0.1", "docker.io", "library/app", {"peer": 10, "upstream": 5}, True)
    clock.now += 1.0
    pulls.blob("10.0.0.1", "docker.io", "library/app", {"cache": 2}, False)
    pulls.manifest("10.0.0.2", "docker.io", "library/app", "1")  # another client
    mine, theirs = reversed(pulls.recent())
    assert theirs["client"] == "10.0.0.2" and theirs["blobs"] == 0
    assert mine["image"] == "docker.io/library/app:1"
    assert mine["blobs"] == 2 and mine["failed_blobs"] == 1
    assert mine["bytes"] == {"cache": 2, "peer": 10, "upstream": 5, "seed": 0}
    assert mine["seconds"] == 1.5 and mine["state"] == "pulling"


def test_a_new_tag_or_a_quiet_spell_starts_a_new_pull() -> None:
    clock = Clock()
    pulls = Pulls(clock, wall=lambda: 0.0)
    pulls.manifest("c", "docker.io", "app", "1")
    pulls.manifest("c", "docker.io", "app", "2")
    clock.now += IDLE_SECONDS + 1
    pulls.blob("c", "docker.io", "app", {"cache": 1}, True)
    images = [p["image"] for p in pulls.recent()]
    assert images == ["docker.io/app", "docker.io/app:2", "docker.io/app:1"]
    assert [p["state"] for p in pulls.recent()] == ["pulling", "done", "done"]


def test_pulls_are_bounded_however_many_clients_and_repositories_there_are() -> None:
    clock = Clock()
    pulls = Pulls(clock, wall=lambda: 0.0)
    for i in range(10 * MAX_OPEN):
        pulls.manifest(f"10.0.{i // 250}.{i % 250}", "docker.io", f"app{i}", "1")
    assert len(pulls._open) == MAX_OPEN
    recent = pulls.recent()
    assert len(recent) == MAX_OPEN + MAX_FINISHED
    assert recent[0]["image"] == f"docker.io/app{10 * MAX_OPEN - 1}:1"
