"""The product's container image, built from the Dockerfile and run with podman the way a user
runs it, on a machine that reaches no container registry (reference/container-build.md).

- The base, `python:3.11-slim`, is a stand-in built by `python-base.sh` (debootstrap), cached
  as a tarball in a directory outside the checkout that survives test runs, keyed by the
  script's content: only the first run on a machine pays for it (about a minute).
- podman keeps its images and containers under a temporary directory (`--root`, `--runroot`),
  runs them with runc (crun refuses these machines' cgroups) and is given the ulimits these
  machines allow on each command line; nothing in /etc is touched. The containers.conf of the
  containers run (a temporary file, through CONTAINERS_CONF) gives them a DNS server that does
  not exist, so a container that looks up a registry's name gets no answer from anywhere.
- Containers run in a network namespace of the test's own, so `-p 8080:8080` takes port 8080
  there, whatever else listens on this machine; the test reaches them from inside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from bench.netns import Host
from tests.support.process import run

T = TypeVar("T")

BASE_SCRIPT = Path(__file__).with_name("python-base.sh")
BASE_IMAGE = "docker.io/library/python:3.11-slim"
# What the machine needs on every `podman run` and `podman build` (reference/container-build.md).
ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]
PREFIX = "dict"  # of the network namespaces: distributed-images container tests


def cache_dir() -> Path:
    """Where the stand-in base is kept between runs: outside any checkout."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "distributed-images-tests"


def python_base(log: Callable[[str], None] = print) -> Path:
    """The stand-in base's root filesystem tarball, built once per version of the script.
    Concurrent test runs wait for each other's build instead of building twice."""
    key = hashlib.sha256(BASE_SCRIPT.read_bytes()).hexdigest()[:16]
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"python-base-{key}.tar"
    with (cache / "python-base.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            log(f"python-base: cached {tarball}")
            return tarball
        for stale in cache.glob("python-base-*.tar*"):
            stale.unlink()
        started = time.monotonic()
        run(["bash", str(BASE_SCRIPT), str(tarball)], timeout=900)
        log(f"python-base: built {tarball} in {time.monotonic() - started:.0f} s")
    return tarball


class Engine:
    """podman with its storage under a temporary directory, its containers in a network
    namespace of their own."""

    def __init__(self) -> None:
        # podman refuses a runroot path longer than 50 characters: a short directory.
        self.workdir = Path(tempfile.mkdtemp(prefix="di-ctr-"))
        self.netns = f"{PREFIX}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.host = Host("containers", self.netns, "127.0.0.1", "")
        (self.workdir / "networks").mkdir()
        network = f'[network]\nnetwork_config_dir = "{self.workdir / "networks"}"\n'
        # Builds run on the host's network, where pip resolves PyPI's name; containers do not.
        self._build_conf = self.workdir / "build.conf"
        self._build_conf.write_text(network)
        self._run_conf = self.workdir / "run.conf"
        self._run_conf.write_text('[containers]\ndns_servers = ["127.0.0.1"]\n' + network)
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)

    def _argv(self, *args: str, inside: bool) -> list[str]:
        podman = [
            "podman",
            "--root", str(self.workdir / "root"),
            "--runroot", str(self.workdir / "run"),
            "--storage-driver", "overlay",
            "--runtime", "runc",
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "none",
            *args,
        ]  # fmt: skip
        return [*self.enter(), *podman] if inside else podman

    def enter(self) -> list[str]:
        """The prefix that runs a command in the containers' network namespace. `ip netns exec`
        would remount /sys, hiding the cgroups runc needs; nsenter joins the network only."""
        return ["nsenter", f"--net=/run/netns/{self.netns}"]

    def podman(
        self, *args: str, timeout: float = 120.0, check: bool = True, inside: bool = True
    ) -> subprocess.CompletedProcess[str]:
        conf = self._run_conf if inside else self._build_conf
        env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        return run(self._argv(*args, inside=inside), timeout=timeout, env=env, check=check)

    def call(self, function: Callable[[], T]) -> T:
        """Run `function` with its sockets in the containers' network namespace."""
        return self.host.call(function)

    def import_base(self, tarball: Path) -> None:
        self.podman(
            "import",
            "--change", "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change", "ENV LANG=C.UTF-8",
            "--change", 'CMD ["python3"]',
            str(tarball), BASE_IMAGE,
            inside=False, timeout=300,
        )  # fmt: skip

    def build(self, context: Path, tag: str) -> None:
        """`podman build --format docker` (the OCI format has no HEALTHCHECK); on the host's
        network, where pip reaches PyPI; never pulling: the base is here."""
        self.podman(
            "build", "--format", "docker", "--pull=never", *ULIMITS, "--tag", tag, str(context),
            inside=False, timeout=900,
        )  # fmt: skip

    def inspect(self, kind: str, name: str) -> dict[str, object]:
        documents: list[dict[str, object]] = json.loads(self.podman(kind, "inspect", name).stdout)
        return documents[0]

    def state(self, container: str) -> dict[str, object]:
        state = self.inspect("container", container)["State"]
        assert isinstance(state, dict)
        return state

    def wait_exit(self, container: str, timeout: float = 60.0) -> int:
        self.podman("wait", container, timeout=timeout)
        return int(str(self.state(container)["ExitCode"]))

    def logs(self, container: str) -> str:
        result = self.podman("logs", container)
        return result.stdout + result.stderr

    def remove(self, *containers: str) -> None:
        self.podman("rm", "--force", "--time", "5", *containers, check=False)

    def close(self) -> None:
        """Every container, image and mount gone, the namespace too, then the directory."""
        with contextlib.suppress(Exception):
            self.podman("rm", "--all", "--force", "--volumes", "--time", "2", check=False)
            self.podman("rmi", "--all", "--force", check=False, inside=False)
        for mount in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            target = mount.split()[1]
            if target.startswith(str(self.workdir)):
                subprocess.run(["umount", "--lazy", target], check=False)
        pids = subprocess.run(
            ["ip", "netns", "pids", self.netns], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        subprocess.run(["ip", "netns", "del", self.netns], check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)


def run_in(engine: Engine, argv: Sequence[str], timeout: float = 120.0) -> str:
    """A client command (skopeo) run inside the containers' namespace; its stdout."""
    return run([*engine.enter(), *argv], timeout=timeout).stdout


@contextlib.contextmanager
def timed(what: str, log: Callable[[str], None] = print) -> Iterator[None]:
    started = time.monotonic()
    yield
    log(f"{what}: {time.monotonic() - started:.1f} s")
