"""A long-running process inside one host of the network (a registry, a tracker, a node agent),
or on this host's loopback (`bench.local.Loopback`) for the single-node benchmarks.

Its output goes to `<logs>/<name>.log`. It runs in a session of its own, so a Ctrl-C typed at
the harness reaches only the harness, which then stops everything in order. `stop()` sends
SIGTERM and escalates to SIGKILL; it is safe to call twice and on a process that never started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import distributed_images

T = TypeVar("T")


class Place(Protocol):
    """Where a daemon runs: a host of the network (`bench.netns.Host`) or `Loopback`."""

    @property
    def name(self) -> str: ...

    def exec_argv(self, argv: Sequence[str]) -> list[str]: ...

    def call(self, function: Callable[[], T]) -> T: ...


class DaemonError(RuntimeError):
    """A daemon exited early or never became ready; the message holds its log tail."""


PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}

# Requests go straight to the hosts of the run, whatever proxy the environment names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def child_environment() -> dict[str, str]:
    """The harness's environment less `DI_*` (they configure the harness, not its children) and
    less HTTP proxy settings (every address a child talks to is a host of the run), with the
    harness's own source tree first on PYTHONPATH: the nodes run the code being benchmarked,
    whatever the working directory or another install holds."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DI_") and k.lower() not in PROXY_VARIABLES
    }
    source = str(Path(distributed_images.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    return env


class Daemon:
    def __init__(
        self, name: str, host: Place, argv: Sequence[str], logs: Path, env: Mapping[str, str]
    ) -> None:
        self.name = name
        self.host = host
        self.argv = list(argv)
        self.env = dict(env)
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.host.exec_argv(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """The process's id (`ip netns exec` execs the command: it is the command's)."""
        if self._process is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait_http(self, url: str, timeout: float, ok: Sequence[int] = (200,)) -> None:
        """Poll `url` from inside the host until it answers with one of `ok`."""
        deadline = time.monotonic() + timeout
        while self.host.call(lambda: http_status(url)) not in ok:
            if not self.running:
                code = self._process.returncode if self._process else None
                raise DaemonError(f"{self.name} exited early ({code})\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise DaemonError(f"{self.name}: {url} not ready after {timeout:.0f} s\n"
                                  f"{self.log_tail()}")  # fmt: skip
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        """CPU time the process has used so far (0 once it is gone)."""
        if self._process is None:
            return 0.0
        try:
            stat = Path(f"/proc/{self._process.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rpartition(")")[2].split()  # the command name may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_bytes(self) -> int | None:
        """The most resident memory the process has had so far (VmHWM); None once it is gone."""
        if self._process is None:
            return None
        try:
            status = Path(f"/proc/{self._process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return None

    def stop(self, timeout: float = 10.0) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever it started

    def kill(self) -> None:
        """SIGKILL, as a crashed host would end it."""
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return f"({self.log_path} is missing)"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- {self.name} ({self.log_path}) ---\n{tail}"


def http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as e:
        e.close()
        return e.code
    except (OSError, ValueError):
        return None


def http_text(url: str, timeout: float = 5.0) -> str:
    with _OPENER.open(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body.decode()
