"""The lease table: one holder per chunk, extended only by progress, lapsing on time."""

from __future__ import annotations

import pytest

from tracker.leases import LeaseTable

D = "sha256:" + "d" * 64


def test_a_chunk_cannot_be_leased_twice() -> None:
    table = LeaseTable(ttl=10)
    table.grant("a", D, 0, now=0)
    with pytest.raises(RuntimeError):
        table.grant("b", D, 0, now=1)
    assert table.get(D, 0) is not None and table.get(D, 0).holder == "a"  # type: ignore[union-attr]


def test_progress_extends_a_lease_and_silence_does_not() -> None:
    table = LeaseTable(ttl=10)
    table.grant("a", D, 0, now=0)
    assert table.renew("a", D, 0, progress=100, now=3) is not None
    assert table.renew("a", D, 0, progress=200, now=8) is not None
    assert table.renew("a", D, 0, progress=200, now=15) is not None  # no progress: not extended
    assert table.expire(now=17) == []
    expired = table.expire(now=18)
    assert [(lease.holder, lease.chunk) for lease in expired] == [("a", 0)]
    assert table.get(D, 0) is None
    assert table.renew("a", D, 0, progress=300, now=18) is None


def test_only_the_holder_renews() -> None:
    table = LeaseTable(ttl=10)
    table.grant("a", D, 0, now=0)
    assert table.renew("b", D, 0, progress=1, now=1) is None


def test_release_and_counts() -> None:
    table = LeaseTable(ttl=10)
    table.grant("a", D, 0, now=0)
    table.grant("a", D, 1, now=0)
    table.grant("b", D, 2, now=0)
    assert table.count("a", D) == 2
    assert len(table) == 3
    assert table.release(D, 0) is not None
    assert table.release(D, 0) is None
    assert [lease.chunk for lease in table.held_by("a")] == [1]
    assert table.leased(D)
    table.release(D, 1)
    table.release(D, 2)
    assert not table.leased(D)
    assert table.expire(now=100) == []


def test_a_regranted_chunk_is_not_expired_by_its_old_deadline() -> None:
    table = LeaseTable(ttl=10)
    table.grant("a", D, 0, now=0)
    table.release(D, 0)
    table.grant("b", D, 0, now=5)
    assert table.renew("b", D, 0, progress=0, now=6) is not None
    assert table.expire(now=11) == []
    assert [lease.holder for lease in table.expire(now=15)] == ["b"]


def test_a_lease_whose_holder_never_renews_lapses_within_the_first_renewal_deadline() -> None:
    table = LeaseTable(ttl=10, first_renewal=4)
    table.grant("dead", D, 0, now=0)
    table.grant("alive", D, 1, now=0)
    # Any renewal proves the holder alive: the lease then runs its full time from the grant.
    assert table.renew("alive", D, 1, progress=0, now=1) is not None
    assert [lease.holder for lease in table.expire(now=4)] == ["dead"]
    assert table.expire(now=9.9) == []
    assert [lease.holder for lease in table.expire(now=10)] == ["alive"]
