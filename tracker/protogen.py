"""Regenerates `tracker/v1/` from `proto/tracker/v1/tracker.proto`: `python -m tracker.protogen`.

The generated modules are committed so that installing the project needs no code generator.
`--check` exits non-zero when the committed code no longer matches the contract; the comparison is
on the compiled descriptor, so a different protoc version that writes the same contract differently
does not count as stale.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO = Path("tracker/v1/tracker.proto")
OUT = ROOT / "tracker" / "v1"
GENERATED = ("tracker_pb2.py", "tracker_pb2.pyi", "tracker_pb2_grpc.py")


def _protoc(args: list[str]) -> None:
    from grpc_tools import protoc  # a test-time dependency: imported only when generating

    include = str(Path(protoc.__file__).parent / "_proto")
    code = protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}", *args])
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def generate(out_root: Path) -> None:
    """Write the generated modules under `out_root/tracker/v1/`."""
    (out_root / "tracker" / "v1").mkdir(parents=True, exist_ok=True)
    _protoc(
        [
            f"--python_out={out_root}",
            f"--pyi_out={out_root}",
            f"--grpc_python_out={out_root}",
            str(PROTO),
        ]
    )


def compiled_descriptor() -> bytes:
    """The FileDescriptorProto of the contract as it is now, serialized."""
    from google.protobuf import descriptor_pb2

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tracker.desc"
        _protoc([f"--descriptor_set_out={out}", str(PROTO)])
        file_set = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return _canonical(file_set.file[0])


def committed_descriptor() -> bytes:
    from google.protobuf import descriptor_pb2

    from tracker.v1 import tracker_pb2

    proto = descriptor_pb2.FileDescriptorProto()
    tracker_pb2.DESCRIPTOR.CopyToProto(proto)
    return _canonical(proto)


def _canonical(proto: Any) -> bytes:
    """Serialized without `json_name`, which protoc writes in descriptor sets but not in gencode."""
    for message in _messages(proto.message_type):
        for field in message.field:
            field.ClearField("json_name")
    return bytes(proto.SerializeToString(deterministic=True))


def _messages(messages: Any) -> Iterator[Any]:
    for message in messages:
        yield message
        yield from _messages(message.nested_type)


def is_stale() -> bool:
    return compiled_descriptor() != committed_descriptor()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracker.protogen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if tracker/v1 is stale")
    args = parser.parse_args(argv)
    if args.check:
        if is_stale():
            print("tracker/v1 is stale: run `make proto`", file=sys.stderr)
            return 1
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        OUT.mkdir(parents=True, exist_ok=True)
        for name in GENERATED:
            (OUT / name).write_bytes((Path(tmp) / "tracker" / "v1" / name).read_bytes())
    init = OUT / "__init__.py"
    if not init.exists():
        init.write_text(
            '"""Generated from proto/tracker/v1/tracker.proto by tracker.protogen."""\n'
        )
    print(f"generated {', '.join(GENERATED)} in {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
