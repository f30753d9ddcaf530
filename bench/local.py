"""This host's own loopback as the place the single-node benchmarks run their daemons.

The cluster benchmark runs each daemon inside a network namespace (`bench.netns.Host`); the
node and seeding benchmarks run a registry and a node on 127.0.0.1. `Loopback` stands where a
`Host` does, so both use one `bench.daemon.Daemon`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

ADDRESS = "127.0.0.1"


class Loopback:
    name = "loopback"
    ip = ADDRESS

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return list(argv)

    def call(self, function: Callable[[], T]) -> T:
        return function()


def free_port() -> int:
    """A TCP port free on the loopback right now (the daemon binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ADDRESS, 0))
        port: int = s.getsockname()[1]
        return port
