"""The committed `tracker/v1/` code matches `proto/tracker/v1/tracker.proto`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracker import protogen
from tracker.v1 import tracker_pb2, tracker_pb2_grpc


def test_generated_code_is_not_stale() -> None:
    assert not protogen.is_stale(), "tracker/v1 is stale: run `make proto` and commit the result"


def test_staleness_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edited = tmp_path / "tracker" / "v1" / "tracker.proto"
    edited.parent.mkdir(parents=True)
    source = (protogen.PROTO_ROOT / protogen.PROTO).read_text()
    edited.write_text(source.replace("string zone = 4;", "string zone = 4;\n  bool extra = 5;", 1))
    monkeypatch.setattr(protogen, "PROTO_ROOT", tmp_path)
    assert protogen.is_stale()


def test_every_rpc_of_the_contract_has_a_stub() -> None:
    service = tracker_pb2.DESCRIPTOR.services_by_name["Tracker"]
    stub_methods = set(vars(tracker_pb2_grpc.TrackerServicer))
    assert {m.name for m in service.methods} <= stub_methods
