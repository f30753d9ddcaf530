"""Real processes for tests: started with their output in a log file, stopped for sure.

A `Daemon` is one long-running child (a registry, containerd, a node). Its stdout and stderr go
to files, so a failing test can print their tail; `stop()` sends SIGTERM and escalates to SIGKILL,
and is safe to call twice. Ports are picked below the kernel's ephemeral range (see `free_port`).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bench.daemon import http_status as http_status  # the one way to poll an endpoint

LOOPBACK = "127.0.0.1"
# Loopback only: never through an HTTP proxy the environment may name.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 10.0) -> bytes:
    with _DIRECT.open(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
PICKABLE_PORTS = 12_000  # how many ports below the ephemeral range tests pick from
_handed: set[int] = set()  # ports this process handed out: never handed out twice


def _pickable() -> range:
    try:
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(max(1024, low - PICKABLE_PORTS), low)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on `host` right now, for a daemon that binds it a moment later.

    Not port 0's answer: the kernel hands ports of its ephemeral range to every outgoing
    connection and every port-0 socket of every process, so under a busy suite one of them
    could take the port before the daemon binds it. Ports below that range are only ever
    chosen, and these are chosen at random (another test process rarely picks alike) and
    never twice by this one."""
    ports = _pickable()
    if len(_handed) > len(ports) // 2:
        _handed.clear()  # those still in use fail the bind below; the rest are free again
    for _ in range(1000):
        port = random.choice(ports)
        if port in _handed:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed.add(port)
        return port
    raise RuntimeError(f"no free port on {host} in {ports}")


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.05,
    on_timeout: Callable[[], str] | None = None,
) -> None:
    """Poll `condition` until it holds; raise TimeoutError naming `what` (and extra context)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            extra = on_timeout() if on_timeout else ""
            raise TimeoutError(f"{what} not true after {timeout:.0f} s\n{extra}")
        time.sleep(interval)


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


class Daemon:
    """One child process with stdout and stderr captured to files under `log_dir`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, f"{self.name} was never started"
        return self._process.pid

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        # Append: a restarted daemon keeps one log, and earlier lines stay available.
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def signal(self, signum: int) -> None:
        if self.running:
            assert self._process is not None
            self._process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self._process is not None
        return self._process.wait(timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; then kills whatever it left in its group."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._kill_group(process.pid)
        return process.returncode

    def kill(self) -> None:
        """SIGKILL: the way a crash or an OOM kill ends a process."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self._kill_group(process.pid)
            process.wait()
        self._kill_group(process.pid)

    @staticmethod
    def _kill_group(pgid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    def log_tail(self, lines: int = 60) -> str:
        return (
            f"--- {self.name} stderr ({self.stderr_path}) ---\n{tail(self.stderr_path, lines)}\n"
            f"--- {self.name} stdout ({self.stdout_path}) ---\n{tail(self.stdout_path, lines)}"
        )

    def describe_exit(self) -> str:
        return f"{self.name} exited with {self.returncode}\n{self.log_tail()}"


def run(
    argv: Sequence[str],
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a client command to completion; on failure raise with its whole output."""
    result = subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env) if env is not None else None,
        check=False,
    )
    if check and result.returncode != 0:
        raise CommandFailed(result)
    return result


def run_bytes(argv: Sequence[str], timeout: float = 120.0) -> bytes:
    """Run a command that writes binary data; its stdout."""
    result = subprocess.run(
        list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(
            f"command failed with {result.returncode}: {' '.join(argv)}\n"
            f"{result.stderr.decode(errors='replace')[-4000:]}"
        )
    return result.stdout


class CommandFailed(AssertionError):
    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        super().__init__(
            f"command failed with {result.returncode}: {' '.join(map(str, result.args))}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
        )
