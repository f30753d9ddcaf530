"""The README documents every command and every flag the console script has."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from distributed_images.cli import build_parser

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
