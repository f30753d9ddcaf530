"""A run's private network: one namespace per host on a bridge that lives in its own namespace.

The host's root namespace gets nothing: no veth, no route, no address. Every namespace is named
`dib-<pid>-<token>-<host>`, so a run never touches another run's namespaces, and namespaces left
by a harness that died (its pid is gone) can be recognised and removed (`remove_stale`).
Addresses come from one private /24 chosen per run; the namespaces have no default route, so
nothing can leave them (reference/netns.md).

A host's link runs at its rate in both directions: one `tbf` on its own `eth0` (egress) and one
on the bridge's end of its veth (what the bridge sends it, its ingress).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

PREFIX = "dib"
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
TBF_BURST = "256kb"
TBF_LATENCY = "50ms"


class NetworkError(RuntimeError):
    """An `ip` or `tc` command failed; the message holds its output."""


def ip(*args: str, check: bool = True) -> str:
    return _run(["ip", *args], check)


def _run(argv: Sequence[str], check: bool = True) -> str:
    result = subprocess.run(
        list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30
    )
    if check and result.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


@dataclass(frozen=True)
class Host:
    name: str  # logical name: upstream, proxy, tracker, node0...
    netns: str
    ip: str
    bridge_port: str  # the veth end in the bridge namespace

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this host (`ip netns exec` execs it: the pid is the command's)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def tx_bytes(self) -> int:
        """Bytes sent by this host's interface, as the kernel counts them (frames and headers)."""
        stat = "/sys/class/net/eth0/statistics/tx_bytes"
        return int(_run(self.exec_argv(["cat", stat])).strip())

    def call(self, function: Callable[[], T]) -> T:
        """Run `function` in a fresh thread that joined this host's network namespace, so its
        sockets are this host's; the thread ends with the call, so no other code runs there."""
        outcome: list[T] = []
        errors: list[BaseException] = []

        def target() -> None:
            try:
                _enter(self.netns)
                outcome.append(function())
            except BaseException as e:  # re-raised in the caller's thread
                errors.append(e)

        thread = threading.Thread(target=target, name=f"netns-{self.name}", daemon=True)
        thread.start()
        thread.join()
        if errors:
            raise errors[0]
        return outcome[0]


def _enter(netns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / netns, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns}")
    finally:
        os.close(fd)


class Network:
    """Create with `Network.create()`, add hosts, and always `destroy()` (it is idempotent)."""

    def __init__(self, prefix: str, subnet: str) -> None:
        self.prefix = prefix
        self.subnet = subnet  # the first three octets, e.g. "10.123.45"
        self.bridge = f"{prefix}-br"
        self.hosts: list[Host] = []

    @classmethod
    def create(cls) -> Network:
        token = f"{random.getrandbits(16):04x}"
        subnet = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"
        network = cls(f"{PREFIX}-{os.getpid()}-{token}", subnet)
        try:
            ip("netns", "add", network.bridge)
            ip("-n", network.bridge, "link", "add", "br0", "type", "bridge")
            ip("-n", network.bridge, "link", "set", "br0", "up")
        except BaseException:
            network.destroy()
            raise
        return network

    def add_host(self, name: str, mbit: float | None, mtu: int = 1500) -> Host:
        """A host on the bridge, its link shaped to `mbit` both ways (None: as fast as a veth)."""
        index = len(self.hosts)
        host = Host(name, f"{self.prefix}-{name}", f"{self.subnet}.{index + 10}", f"v{index}")
        self.hosts.append(host)  # before the first command: destroy() then removes it
        ip("netns", "add", host.netns)
        ip("-n", host.netns, "link", "add", "eth0", "mtu", str(mtu), "type", "veth", "peer", "name",
           host.bridge_port, "mtu", str(mtu), "netns", self.bridge)  # fmt: skip
        ip("-n", self.bridge, "link", "set", host.bridge_port, "master", "br0", "up")
        ip("-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        ip("-n", host.netns, "link", "set", "eth0", "up")
        ip("-n", host.netns, "link", "set", "lo", "up")
        if mbit is not None:
            self._shape(host.netns, "eth0", mbit)
            self._shape(self.bridge, host.bridge_port, mbit)
        return host

    def reshape(self, host: Host, mbit: float) -> None:
        """Change the rate of a host's link, both ways, while everything runs."""
        self._shape(host.netns, "eth0", mbit, "change")
        self._shape(self.bridge, host.bridge_port, mbit, "change")

    @staticmethod
    def _shape(netns: str, device: str, mbit: float, verb: str = "add") -> None:
        rate = f"{mbit:g}mbit"
        _run(["tc", "-n", netns, "qdisc", verb, "dev", device, "root", "tbf", "rate", rate,
              "burst", TBF_BURST, "latency", TBF_LATENCY])  # fmt: skip

    def destroy(self) -> None:
        """Kill every process left in the hosts, then delete every namespace of this run."""
        for host in self.hosts:
            kill_namespace(host.netns)
        for netns in [h.netns for h in self.hosts] + [self.bridge]:
            ip("netns", "del", netns, check=False)
        self.hosts.clear()

    def leftovers(self) -> list[str]:
        return [n for n in list_namespaces() if n.startswith(self.prefix + "-")]


def list_namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def kill_namespace(netns: str, timeout: float = 5.0) -> None:
    """SIGKILL every process inside `netns` and wait until they are gone."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [int(p) for p in ip("netns", "pids", netns, check=False).split()]
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def remove_stale() -> list[str]:
    """Remove the namespaces of earlier runs whose harness process no longer exists."""
    removed = []
    for netns in list_namespaces():
        parts = netns.split("-")
        if len(parts) < 4 or parts[0] != PREFIX or not parts[1].isdigit():
            continue
        if Path(f"/proc/{parts[1]}").exists():
            continue
        kill_namespace(netns)
        ip("netns", "del", netns, check=False)
        removed.append(netns)
    return removed
