"""The README documents every command and every flag the console script has."""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path
from typing import Any

import pytest

from distributed_images import settings
from distributed_images.cli import build_parser
from distributed_images.settings import parse_size

README = (Path(__file__).parents[2] / "README.md").read_text()


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser, _ = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_flag_is_in_the_readme(command: str) -> None:
    assert f"distributed-images {command}" in README
    flags = {
        option
        for action in _commands()[command]._actions
        for option in action.option_strings
        if option.startswith("--") and not option.startswith("--no-")
    }
    missing = sorted(
        f for f in flags - {"--help"} if not re.search(rf"{re.escape(f)}(?![\w-])", README)
    )
    assert missing == []


# The commands documented by a flag table: the module of their Config.
FLAG_TABLES = {"node": "node.config", "tracker": "tracker.app"}
# Defaults the table states in words, since they depend on the machine.
IN_WORDS = {"--auth-file": "`$DOCKER_CONFIG/config.json`"}


def _table(command: str) -> dict[str, str]:
    """flag -> the default cell of its row, in the command's flag table."""
    section = README.split(f"### `distributed-images {command}`\n", 1)[1].split("\n#", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if line.startswith("| `--"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            flags = [f for f in re.findall(r"`(--[\w-]+)", cells[0]) if not f.startswith("--no-")]
            rows |= dict.fromkeys(flags, cells[1])
    return rows


def _defaults(command: str) -> dict[str, Any]:
    config_type = importlib.import_module(FLAG_TABLES[command]).Config
    config = config_type()
    defaults = {}
    for leaf in settings._leaves(config_type):
        value = config
        for name in leaf.path:
            value = getattr(value, name)
        defaults[leaf.flag] = value
    return defaults


@pytest.mark.parametrize("command", sorted(FLAG_TABLES))
def test_every_flag_table_states_each_default_as_the_code_has_it(command: str) -> None:
    rows, defaults = _table(command), _defaults(command)
    assert set(defaults) <= set(rows) | {"--config"}, set(defaults) - set(rows)
    for flag, cell in rows.items():
        default = defaults[flag]
        assert cell, f"{flag}: no default in the README"
        first = cell.strip("`").split()[0]
        if flag in IN_WORDS:
            assert cell == IN_WORDS[flag]
        elif isinstance(default, bool):
            assert first == ("on" if default else "off"), (flag, cell)
        elif isinstance(default, int | float):
            number = float(first) if re.fullmatch(r"[\d.]+", first) else parse_size(first)
            assert number == default, (flag, cell, default)
        elif isinstance(default, Path):
            assert Path(first) == default, (flag, cell)
        elif isinstance(default, str) and default:
            assert cell == f"`{default}`", (flag, cell, default)
        elif not default:  # None, "" or []: said in words ("none", "the listen address", ...)
            assert not re.search(r"\d", first) or "=" in first, (flag, cell)
