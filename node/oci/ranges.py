"""HTTP Range requests on blobs: one byte range, as registries and their clients use them."""

from __future__ import annotations

import re

from node.errors import RangeInvalid

_RANGE = re.compile(r"bytes=([0-9]*+)-([0-9]*+)")
# More digits than any blob size has: such a position is past the end of every blob. (Python
# refuses to convert numbers of thousands of digits, and takes quadratic time below that.)
MAX_DIGITS = 19


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of the one range asked for, or None for the whole blob.

    A malformed or unsatisfiable range is an error (416) rather than silently ignored, so a
    client with a bug learns of it.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if not match or match.group(1) == match.group(2) == "":
        raise RangeInvalid("malformed Range header", size)
    first, last = match.groups()
    if first == "":
        suffix = _position(last)
        if suffix == 0:
            raise RangeInvalid("empty suffix range", size)
        return max(0, size - suffix), size
    start = _position(first)
    end = size if last == "" else min(size, _position(last) + 1)
    if start >= size or end <= start:
        raise RangeInvalid("range not satisfiable", size)
    return start, end


def _position(digits: str) -> int:
    """A byte position; any beyond 10^19 is as good as infinite."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= MAX_DIGITS else 10**MAX_DIGITS
