"""The `distributed-images` console script: one subcommand per deployable or tool.

A command is a module with `Config` (a dataclass, see `settings`), `HELP` (one line) and
`main(config) -> int`. A command whose module is absent from the build is left out of the help.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from types import ModuleType

from distributed_images import logs, settings

COMMANDS: dict[str, str] = {
    "node": "node.app",
    "tracker": "tracker.app",
    "status": "tracker.status",
    "preheat": "tracker.preheat",
    "bench": "bench.cli",
    "containerd-config": "node.hostsconfig",
    "doctor": "node.doctor",
}


def _load(module_name: str) -> ModuleType | None:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            return None  # the command is not part of this build
        raise


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    parser = argparse.ArgumentParser(
        prog="distributed-images",
        description="Peer-to-peer container image distribution: a registry mirror on every host.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules: dict[str, ModuleType] = {}
    for name, module_name in COMMANDS.items():
        module = _load(module_name)
        if module is None:
            continue
        modules[name] = module
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        settings.add_arguments(command, module.Config)
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
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
    except Exception:
        logging.getLogger("distributed_images").exception("%s failed", args.command)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
