"""Whether the test running now has failed, for fixtures that print logs only then.

`tests/conftest.py` records each report in the item's stash (pytest's documented recipe);
fixtures ask `failed(request)` at teardown.
"""

from __future__ import annotations

import pytest

FAILED = pytest.StashKey[bool]()


def record(item: pytest.Item, report: pytest.TestReport) -> None:
    if report.failed:
        item.stash[FAILED] = True


def failed(request: pytest.FixtureRequest) -> bool:
    result: bool = request.node.stash.get(FAILED, False)
    return result
