"""The node as a process: where it listens, how it reports health, how it stops."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

import pytest

from tests.support.node import Node
from tests.support.process import http_status
from tests.support.registry import Registry

pytestmark = pytest.mark.integration


def _listening(pid: int) -> list[str]:
    """The local addresses of the process's listening TCP and bound UDP sockets."""
    out = subprocess.run(
        ["ss", "-H", "-l", "-n", "-p", "-t", "-u"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[4] for line in out.splitlines() if f"pid={pid}," in line]


def test_node_listens_only_on_the_loopback_addresses_it_was_given(node: Node) -> None:
    addresses = _listening(node.pid)
    assert f"127.0.0.1:{node.port}" in addresses
    for address in addresses:
        host = re.sub(r"%\w+$", "", address.rpartition(":")[0]).strip("[]")
        assert host.removeprefix("::ffff:").startswith("127."), addresses


def test_health_and_readiness_answer_and_sigterm_exits_cleanly(
    node_factory: Callable[..., Node], upstream: Registry
) -> None:
    node = node_factory({upstream.host: upstream.url}, upstream.host)
    assert http_status(f"{node.url}/healthz") == 200
    assert http_status(f"{node.url}/readyz") == 200
    assert http_status(f"{node.url}/v2/") == 200
    assert node.stop() == 0
    assert http_status(f"{node.url}/healthz", timeout=1.0) is None
