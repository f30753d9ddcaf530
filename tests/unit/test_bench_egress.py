"""When the upstream sent a run's bytes, from its interface counter sampled during the run."""

from __future__ import annotations

from bench.egress import NOISE, Egress

MiB = 1 << 20


def sampled(counts: list[int], every: float = 0.05) -> Egress:
    """An Egress over a counter that reads `counts` in turn (the first read is the start)."""
    reads = iter(counts)
    egress = Egress(lambda: next(reads))
    for i in range(len(counts) - 1):
        egress.sample(i * every)
    return egress


def test_the_first_and_last_blob_bytes_are_timed_past_the_small_requests() -> None:
    base = 5000
    counts = [base, base + 2000, base + 9000, base + 2 * MiB, base + 60 * MiB, base + 64 * MiB]
    counts += [base + 64 * MiB + 3000] * 4  # a HEAD answered after the last blob byte
    figures = sampled(counts, every=0.5).figures(64 * MiB)
    assert figures == {"upstream_first_byte_seconds": 1.0, "upstream_last_byte_seconds": 2.0}


def test_a_run_that_sent_less_than_half_the_image_times_nothing() -> None:
    assert sampled([0, NOISE, 10 * MiB, 20 * MiB]).figures(64 * MiB) == {}
    assert Egress(lambda: 0).figures(64 * MiB) == {}
