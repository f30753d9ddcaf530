"""HTTP Range requests on blobs: one byte range, as registries and their clients use them."""

from __future__ import annotations

import re

from node.errors import RangeInvalid

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


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
        suffix = int(last)
        if suffix == 0:
            raise RangeInvalid("empty suffix range", size)
        return max(0, size - suffix), size
    start = int(first)
    end = size if last == "" else min(size, int(last) + 1)
    if start >= size or end <= start:
        raise RangeInvalid("range not satisfiable", size)
    return start, end
