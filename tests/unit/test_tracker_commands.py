"""The `status` and `preheat` commands' own logic: output formats and flag parsing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from distributed_images.cli import build_parser
from distributed_images.settings import load
from tracker import preheat, status
from tracker.client import BlobStatus, ClusterStatus, NodeStatus

STATUS = ClusterStatus(
    tracker_instance="abc",
    uptime_seconds=12.5,
    nodes=(
        NodeStatus("n1", "10.0.0.1:8080", "10.0.0.1:6881", "z1", 2, 10, 1, 0, 0.4, 30.0),
        NodeStatus("n2", "10.0.0.2:8080", "10.0.0.2:6881", "", 0, 0, 0, 1, 1.2, 5.0),
    ),
    blobs=(BlobStatus("sha256:" + "d" * 64, 100, 1, 1, 1, 1, 1, 0),),
    blobs_truncated=False,
    blob_count=1,
    chunk_count=1,
    lease_count=1,
    preheat_tasks=0,
)


def test_status_json_has_the_contract_fields() -> None:
    out = json.loads(json.dumps(status.as_json(STATUS, "t:7070")))
    assert [
        {k: n[k] for k in ("id", "registry", "peer", "zone", "blobs")} for n in out["nodes"]
    ] == [
        {
            "id": "n1",
            "registry": "10.0.0.1:8080",
            "peer": "10.0.0.1:6881",
            "zone": "z1",
            "blobs": 2,
        },
        {"id": "n2", "registry": "10.0.0.2:8080", "peer": "10.0.0.2:6881", "zone": "", "blobs": 0},
    ]
    assert out["totals"] == {"nodes": 2, "blobs": 1, "chunks": 1, "leases": 1, "preheat_tasks": 0}
    assert out["blobs"][0]["holders"] == 1


def test_status_table_lists_every_node() -> None:
    out = io.StringIO()
    status.write_table(STATUS, "t:7070", out)
    lines = out.getvalue().splitlines()
    assert "2 nodes" in lines[0]
    assert lines[1].split()[:4] == ["NODE", "REGISTRY", "PEER", "ZONE"]
    assert lines[2].split()[:5] == ["n1", "10.0.0.1:8080", "10.0.0.1:6881", "z1", "2"]
    assert lines[3].split()[3] == "-"


@pytest.mark.parametrize("text, count", [("all", 0), ("ALL", 0), ("3", 3)])
def test_preheat_node_counts(text: str, count: int) -> None:
    assert preheat.node_count(text) == count


@pytest.mark.parametrize("text", ["0", "-1", "zero", ""])
def test_preheat_rejects_bad_node_counts(text: str) -> None:
    with pytest.raises(ValueError, match="--nodes"):
        preheat.node_count(text)


def test_preheat_flags_and_environment() -> None:
    parser, _ = build_parser()
    args = parser.parse_args(["preheat", "--tracker", "t:7070", "img:1", "--nodes", "2", "--wait"])
    config = load(preheat.Config, args, {"DI_CREDENTIAL_FILE": "/c", "DI_ZONE": "z1"})
    assert (config.image, config.nodes, config.wait, config.zone) == ("img:1", "2", True, "z1")
    assert (config.connection.tracker, config.connection.credential_file) == ("t:7070", Path("/c"))


def test_a_command_without_tracker_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert status.main(status.Config()) == 1
    assert "--tracker" in capsys.readouterr().err
