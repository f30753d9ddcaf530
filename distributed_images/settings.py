"""Typed configuration, filled once at the edge from a TOML file, `DI_*` variables and flags.

Each module owns a small config dataclass; a binary's config composes them as nested dataclass
fields. Every leaf field is one flag (`cache_max_bytes` is `--cache-max-bytes`), one environment
variable (`DI_CACHE_MAX_BYTES`) and one TOML key (`cache-max-bytes` or `cache_max_bytes`), so the
three sources can never drift apart. Precedence: defaults < file < environment < flags.

Field metadata understood here: `help`, `metavar`, `parse` (a str -> value function for sizes and
the like), `positional: True` for a command's operand, and `flag: False` for fields that are set
only by code. A number is finite and at least 0 unless its field says otherwise with `min`,
`above` (more than) or `max`: a count of 0 or a time of 0 that would stop the work is refused at
the edge, with the key named, rather than found out as a hang.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ENV_PREFIX = "DI_"
_KINDS = {int: "a whole number", float: "a number"}


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the source and the key."""


@dataclasses.dataclass(frozen=True)
class _Leaf:
    path: tuple[str, ...]  # attribute path from the root config
    name: str
    kind: type  # str, int, float, bool, Path or list
    optional: bool
    parse: Callable[[str], Any] | None
    help: str
    metavar: str | None
    positional: bool
    minimum: float  # numbers only, like the two below
    above: float | None
    maximum: float | None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def parse_size(text: str) -> int:
    """`512MiB`, `10G`, `1e9` or a plain byte count."""
    units = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
    units |= {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
    raw = text.strip().lower().removesuffix("b").removesuffix("/s")
    number = raw.rstrip("kmgti")
    unit = raw[len(number) :]
    if unit not in units or not number or not math.isfinite(float(number)):
        raise ValueError(f"not a size: {text!r}")
    return int(float(number) * units[unit])


def as_given(check: Callable[[str], object]) -> Callable[[str], str]:
    """A `parse` that keeps the text as given once `check` takes it (ValueError if not): for
    values parsed again where they are used, such as addresses and NS=URL mappings."""

    def parse(text: str) -> str:
        check(text)
        return text

    return parse


def format_size(count: float) -> str:
    """`512 B`, `1.5 MiB`, `3.2 GiB`: sizes for people (parse_size reads them back)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024:
            return f"{count:.0f} B" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def _leaves(config_type: type, path: tuple[str, ...] = ()) -> Iterator[_Leaf]:
    hints = typing.get_type_hints(config_type)
    for f in dataclasses.fields(config_type):
        if f.metadata.get("flag", True) is False:
            continue
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _leaves(typing.cast(type, hint), (*path, f.name))
            continue
        kind, optional = _unwrap(hint)
        yield _Leaf(
            path=(*path, f.name),
            name=f.name,
            kind=kind,
            optional=optional,
            parse=f.metadata.get("parse"),
            help=f.metadata.get("help", ""),
            metavar=f.metadata.get("metavar"),
            positional=f.metadata.get("positional", False),
            minimum=f.metadata.get("min", 0),
            above=f.metadata.get("above"),
            maximum=f.metadata.get("max"),
        )


def _unwrap(hint: Any) -> tuple[type, bool]:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _unwrap(args[0])[0], True
    if origin in (list, tuple):
        return list, False
    return typing.cast(type, hint), False


def add_arguments(parser: argparse.ArgumentParser, config_type: type) -> None:
    """Declare one flag per leaf field; unset flags stay absent so lower sources show through."""
    parser.add_argument(
        "--config", metavar="FILE.toml", default=argparse.SUPPRESS, help="a TOML config file"
    )
    for leaf in _leaves(config_type):
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": leaf.help}
        if leaf.positional:
            parser.add_argument(leaf.name, metavar=leaf.metavar, help=leaf.help)
            continue
        if leaf.kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif leaf.kind is list:
            kwargs["action"] = "append"
            kwargs["metavar"] = leaf.metavar
        else:
            kwargs["metavar"] = leaf.metavar
        parser.add_argument(leaf.flag, dest=leaf.name, **kwargs)


def load(config_type: type[T], args: argparse.Namespace, environ: Mapping[str, str]) -> T:
    """Build `config_type` from defaults, then the TOML file, the environment, then flags."""
    values: dict[tuple[str, ...], Any] = {}
    config_file = getattr(args, "config", None) or environ.get(ENV_PREFIX + "CONFIG")
    file_values = _read_toml(Path(config_file)) if config_file else {}
    known = set()
    for leaf in _leaves(config_type):
        known.update({leaf.name, leaf.name.replace("_", "-")})
        for key in (leaf.name, leaf.name.replace("_", "-")):
            if key in file_values:
                values[leaf.path] = _coerce(leaf, file_values[key], f"{config_file}: {key}")
        if leaf.env in environ:
            values[leaf.path] = _coerce(leaf, environ[leaf.env], leaf.env)
        if hasattr(args, leaf.name):
            values[leaf.path] = _coerce(leaf, getattr(args, leaf.name), leaf.flag)
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise ConfigError(f"{config_file}: unknown keys: {', '.join(unknown)}")
    return typing.cast(T, _build(config_type, (), values))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as e:  # a directory, a file this user may not read
        raise ConfigError(f"cannot read the config file {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None


def _coerce(leaf: _Leaf, raw: Any, source: str) -> Any:
    try:
        if leaf.kind is list:
            items = raw if isinstance(raw, list) else [raw]
            # An environment variable holds a list as space- or comma-separated words.
            words = [w for item in items for w in str(item).replace(",", " ").split()]
            return [leaf.parse(w) for w in words] if leaf.parse else words
        if isinstance(raw, str) and raw == "" and leaf.optional:
            return None
        if leaf.kind is bool:
            return raw if isinstance(raw, bool) else _parse_bool(str(raw))
        if isinstance(raw, bool) or (leaf.kind is int and isinstance(raw, float)):
            # A TOML true or 2.7 where a count goes: int() would make it 1 or 2.
            raise ValueError(f"not {_KINDS.get(leaf.kind, 'text')}: {raw!r}")
        value = leaf.parse(str(raw)) if leaf.parse is not None else leaf.kind(raw)
        if leaf.kind in (int, float):
            _check_bounds(leaf, value)
        return value
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {e}") from None


def _check_bounds(leaf: _Leaf, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}")
    if leaf.above is not None and not value > leaf.above:
        raise ValueError(f"must be more than {leaf.above:g}, got {value:g}")
    if value < leaf.minimum:
        raise ValueError(f"must be at least {leaf.minimum:g}, got {value:g}")
    if leaf.maximum is not None and value > leaf.maximum:
        raise ValueError(f"must be at most {leaf.maximum:g}, got {value:g}")


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _build(config_type: type, path: tuple[str, ...], values: dict[tuple[str, ...], Any]) -> Any:
    hints = typing.get_type_hints(config_type)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(config_type):
        hint = hints[f.name]
        here = (*path, f.name)
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _build(typing.cast(type, hint), here, values)
        elif here in values:
            kwargs[f.name] = values[here]
    return config_type(**kwargs)
