"""The benchmark's report: each scenario against its own bound, its costs, and a sweep over N."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import chart, reattach, results, sweep
from bench.measurement import Measurement

MiB = 1 << 20
GiB = 1 << 30
SIZE = 256 * MiB
LB = 10.0  # S/U at U = 200 Mbit/s (near enough)
SB = 5.0  # S/B


def run(seconds: list[float], **details: Any) -> Measurement:
    costs = {
        "agents_cpu_seconds_per_gib": 8.0,
        "agents_peak_rss_bytes": 120 * MiB,
        "machine_cpu_busy": 0.5,
    }
    return Measurement(seconds, [], SIZE, 2 * SIZE, 3 * SIZE, costs | details)


def warm(seconds: list[float], **details: Any) -> Measurement:
    measured = run(seconds, **details)
    measured.bound_seconds, measured.bound = SB, "S/B"
    return measured


def params(nodes: int = 8) -> dict[str, Any]:
    return {
        "nodes": nodes, "image_bytes": SIZE, "layers": 3, "node_mbit": 400.0,
        "upstream_mbit": 200.0, "lb_seconds": LB, "repeat": 2, "command": "bench",
        "started_at": "2024-01-01T00:00:00Z", "cpus": 2, "load_average_1m": 1.0, "mtu": 1500,
    }  # fmt: skip


def test_a_warm_scenario_is_judged_against_s_over_b_and_a_cold_one_against_lb() -> None:
    cold = results.summarize([run([12.0, 12.0])], LB, SIZE)
    held = results.summarize([warm([6.0, 6.0])], LB, SIZE)
    assert (cold["bound"], cold["bound_seconds"], cold["p50_lb"]) == ("LB", LB, 1.2)
    assert (held["bound"], held["bound_seconds"], held["p50_lb"]) == ("S/B", SB, 1.2)


def test_costs_are_the_worst_repeat_and_a_busy_machine_is_flagged() -> None:
    entry = results.summarize(
        [
            run([12.0], agents_cpu_seconds_per_gib=8.4, machine_cpu_busy=0.62),
            run([12.0], agents_cpu_seconds_per_gib=9.4, machine_cpu_busy=0.94),
        ],
        LB,
        SIZE,
    )
    assert entry["agents_cpu_seconds_per_gib"] == 9.4
    assert entry["agents_peak_rss_bytes"] == 120 * MiB
    assert entry["cpu_bound"] is True
    calm = results.summarize([run([12.0], machine_cpu_busy=0.5)], LB, SIZE)
    assert calm["cpu_bound"] is False


def test_the_table_shows_bounds_failures_costs_and_preheat_in_columns() -> None:
    preheated = warm([3.0, 3.5], preheat_seconds=11.0, preheat_lb=1.1, preheat_failed_nodes=1)
    runs = {
        "p2p-cold": [
            run([12.0], agents_cpu_seconds_per_gib=8.4, machine_cpu_busy=0.62),
            run([13.0], agents_cpu_seconds_per_gib=9.4, machine_cpu_busy=0.94),
        ],
        "preheat": [preheated],
        "churn": [],
    }
    runs["p2p-cold"][1].failures.append("node3: no result after 80 s")
    document = results.document(params(), runs, {"churn": {"skipped": "no"}}, LB, SIZE)
    text = results.markdown(document)
    header = next(line for line in text.splitlines() if line.startswith("| scenario |"))
    assert "| failed |" in header and "| preheat s |" in header
    assert "| agents' CPU s/GiB | agents' RSS MiB | CPU busy |" in header
    width = header.count("|")
    cold = next(line for line in text.splitlines() if line.startswith("| p2p-cold |"))
    assert cold.count("|") == width
    assert "| LB 10.00 | 2 | 1 |" in cold
    assert "| 8.4-9.4 | 120 | 62-94% CPU-bound |" in cold
    preheat = next(line for line in text.splitlines() if line.startswith("| preheat |"))
    assert "| S/B 5.00 |" in preheat
    assert "| 0.65 | 0.70 | 0.70 |" in preheat  # p50, p99 and max over S/B
    assert "| 11.0 (1.10 LB), 1 nodes failed |" in preheat
    churn = next(line for line in text.splitlines() if line.startswith("| churn |"))
    assert churn.count("|") == width


def test_a_cold_row_says_when_the_upstream_sent_the_image() -> None:
    runs = {
        "p2p-cold": [
            run([12.0], upstream_first_byte_seconds=0.4, upstream_last_byte_seconds=10.6),
            run([12.5], upstream_first_byte_seconds=0.5, upstream_last_byte_seconds=11.2),
        ],
        "p2p-warm": [warm([6.0])],
    }
    text = results.markdown(results.document(params(), runs, {}, LB, SIZE))
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| p2p")}
    assert "upstream sent at 0.4-10.6, 0.5-11.2 s" in rows["| p2p-cold"]


def test_a_row_says_how_much_of_what_peers_sent_was_redundant() -> None:
    runs = {
        "p2p-cold": [run([12.0], peer_redundant_bytes=0), run([12.5], peer_redundant_bytes=0)],
        "p2p-warm": [
            warm([6.0], peer_redundant_bytes=40 * MiB),
            warm([6.5], peer_redundant_bytes=int(52.5 * MiB)),
        ],
    }
    text = results.markdown(results.document(params(), runs, {}, LB, SIZE))
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| p2p")}
    assert "40.0-52.5 MiB of it redundant" in rows["| p2p-warm"]
    assert "redundant" not in rows["| p2p-cold"]
    assert "upstream sent" not in rows["| p2p-warm"]


def test_a_run_that_the_hypervisor_took_cpu_from_says_how_much() -> None:
    runs = {
        "p2p-cold": [
            run([12.0], machine_cpu_busy=0.95, machine_cpu_stolen=0.26),
            run([13.0], machine_cpu_busy=0.93, machine_cpu_stolen=0.12),
        ],
        "p2p-warm": [warm([6.0], machine_cpu_busy=0.6, machine_cpu_stolen=0.01)],
    }
    document = results.document(params(), runs, {}, LB, SIZE)
    assert [r["machine_cpu_stolen"] for r in document["scenarios"]["p2p-cold"]["runs"]] == [
        0.26,
        0.12,
    ]
    rows = {
        line.split(" | ")[0]: line
        for line in results.markdown(document).splitlines()
        if line.startswith("| p2p")
    }
    assert "| 93-95% CPU-bound, 12-26% stolen |" in rows["| p2p-cold"]
    assert "| 60% |" in rows["| p2p-warm"]


def test_targets_are_checked_on_the_scenario_they_name() -> None:
    runs = {"p2p-warm": [warm([6.0, 8.0], agents_cpu_seconds_per_gib=3.0)]}
    document = results.document(params(), runs, {}, LB, SIZE)
    checked = {t["target"]: t for t in document["targets"]}
    assert checked["p2p-warm p50 / (S/B)"]["value"] == 1.4
    assert checked["p2p-warm p50 / (S/B)"]["met"] is False
    assert checked["p2p-warm agents' CPU s / GiB"]["met"] is True
    assert not any(t.startswith("p2p-cold ") for t in checked)  # it did not run


def test_a_failover_row_says_how_long_its_nodes_took_to_move(tmp_path: Path) -> None:
    logs = {"node0": tmp_path / "node0.log", "node2": tmp_path / "node2.log"}
    killed_at = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    logs["node0"].write_text(
        f'ts=2027-01-15T07:59:59.000Z level=info msg="{reattach.MOVED}" seconds=0.2\n'
        f'ts=2027-01-15T08:00:01.250Z level=info msg="{reattach.MOVED}; watches" seconds=1.2\n'
    )
    logs["node2"].write_text("ts=2027-01-15T08:00:00.500Z level=info msg=joined\n")
    assert reattach.moved_after(logs["node0"], killed_at) == 1.25  # not the move before the kill
    assert reattach.moved_after(logs["node2"], killed_at) is None
    failover = run(
        [13.0],
        killed_tracker="tracker",
        kill_after_seconds=4.0,
        reattach_seconds={"node0": 1.25, "node2": 2.5},
        reattach_never=[],
        reattach_never_count=0,
        heartbeat_interval_seconds=5.0,
        reattach_max_heartbeats=0.5,
    )
    runs = {"p2p-cold": [run([12.0])], "p2p-cold-failover": [failover]}
    document = results.document(params(), runs, {}, LB, SIZE)
    text = results.markdown(document)
    row = next(line for line in text.splitlines() if line.startswith("| p2p-cold-failover |"))
    assert (
        "tracker killed at 4.0 s, 2 nodes re-attached in 1.25-2.50 s (0.25-0.50 heartbeats)" in row
    )
    checked = {t["target"]: t for t in document["targets"]}
    assert checked["p2p-cold-failover re-attach / heartbeat interval"]["met"] is True
    assert checked["p2p-cold-failover nodes never re-attached"]["met"] is True
    # A repeat in which a node never moved is not hidden by the others.
    stuck = run(
        [13.0],
        killed_tracker="tracker",
        kill_after_seconds=4.0,
        reattach_seconds={"node0": None, "node2": 2.5},
        reattach_never=["node0"],
        reattach_never_count=1,
        heartbeat_interval_seconds=5.0,
        reattach_max_heartbeats=None,
    )
    runs["p2p-cold-failover"].append(stuck)
    document = results.document(params(), runs, {}, LB, SIZE)
    checked = {t["target"]: t for t in document["targets"]}
    assert checked["p2p-cold-failover nodes never re-attached"]["met"] is False
    row = next(
        line for line in results.markdown(document).splitlines() if "p2p-cold-failover |" in line
    )
    assert "never: node0" in row


def sweep_of(counts: list[int]) -> dict[str, Any]:
    by_nodes = {}
    for n in counts:
        runs = {"p2p-cold": [run([11.0, 12.0 + n / 4])], "p2p-warm": [warm([5.5, 6.0 + n / 8])]}
        runs["proxy"] = []
        by_nodes[n] = results.document(params(n), runs, {"proxy": {"error": "x | y"}}, LB, SIZE)
    return sweep.document(params() | {"nodes": counts}, by_nodes)


def test_a_sweep_gives_p50_and_p99_against_n_for_each_scenario() -> None:
    swept = sweep_of([4, 8, 16])
    assert swept["results"] == {
        "4": "nodes-4/results.json",
        "8": "nodes-8/results.json",
        "16": "nodes-16/results.json",
    }
    cold = swept["scenarios"]["p2p-cold"]
    assert [p["nodes"] for p in cold] == [4, 8, 16]
    assert [p["p50_lb"] for p in cold] == [1.2, 1.25, 1.35]
    assert swept["scenarios"]["p2p-warm"][0]["bound"] == "S/B"
    text = sweep.markdown(swept)
    assert "| scenario | bound | N = 4 | N = 8 | N = 16 | p50 at N = 16 / at N = 4 |" in text
    warm_row = next(line for line in text.splitlines() if line.startswith("| p2p-warm |"))
    assert warm_row.startswith("| p2p-warm | S/B | 1.20 / 1.30 | 1.25 / 1.40 |")
    proxy_row = next(line for line in text.splitlines() if line.startswith("| proxy |"))
    assert "x \\| y" in proxy_row and proxy_row.endswith("| n/a |")


def test_a_sweep_is_plotted(tmp_path: Path) -> None:
    path = tmp_path / "sweep.png"
    chart.draw_sweep(sweep_of([4, 8]), path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
