"""The `distributed-images` console script: one subcommand per deployable or tool.

A command is a module with `Config` (a dataclass, see `settings`), `HELP` (one line) and
`main(config) -> int`. Only the module of the command being run is imported, so `status` does
not pay for libtorrent or matplotlib; the overview lists each command with the summary below.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from types import ModuleType

from distributed_images import logs, settings
from distributed_images.startup import StartupError

# name: (module, one-line summary for the overview; the module's HELP describes it in full)
COMMANDS: dict[str, tuple[str, str]] = {
    "node": ("node.app", "run a node agent: this host's registry mirror"),
    "tracker": ("tracker.app", "run the tracker that coordinates a cluster's nodes"),
    "status": ("distributed_images.status", "show a node's state, or a tracker's nodes and blobs"),
    "preheat": ("tracker.preheat", "pull an image onto chosen nodes ahead of a rollout"),
    "credential": ("tracker.issue", "make the cluster secret, issue node and operator credentials"),
    "bench": ("bench.cli", "load-test the cluster against direct and proxy pulls"),
    "containerd-config": ("node.hostsconfig", "write containerd hosts.toml files for a node"),
    "doctor": ("node.doctor", "check that containerd on this host pulls through the node"),
}


def build_parser(
    command: str | None = None,
) -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    """The parser, with full flags for `command` (every command when None)."""
    parser = argparse.ArgumentParser(
        prog="distributed-images",
        description="Peer-to-peer container image distribution: a registry mirror on every host.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules: dict[str, ModuleType] = {}
    for name, (module_name, summary) in COMMANDS.items():
        if command is not None and name != command:
            sub.add_parser(name, help=summary)
            continue
        module = importlib.import_module(module_name)
        modules[name] = module
        parser_of_command = sub.add_parser(name, help=summary, description=module.HELP)
        settings.add_arguments(parser_of_command, module.Config)
    return parser, modules


# gRPC's C core prints its informational lines to stderr unless told otherwise: one per failed
# TLS handshake, so any client could make a tracker's log as long as it liked. Its errors still
# show; GRPC_VERBOSITY (and GRPC_TRACE) set in the environment asks for more.
GRPC_VERBOSITY = "ERROR"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("GRPC_VERBOSITY", GRPC_VERBOSITY)  # before a command imports grpc
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser, modules = build_parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(argv)
    module = modules[args.command]
    try:
        config = settings.load(module.Config, args, os.environ)
    except settings.ConfigError as e:
        parser.error(str(e))
    logs.setup(getattr(config, "log_level", "info"))
    try:
        code: int = module.main(config)
    except KeyboardInterrupt:
        return 130
    except StartupError as e:
        print(f"distributed-images {args.command}: {e}", file=sys.stderr)
        return 1
    except Exception:
        logging.getLogger("distributed_images").exception("%s failed", args.command)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
