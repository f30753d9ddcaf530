"""A real containerd daemon under a temporary directory, and `ctr` pulling through a mirror.

containerd finds a registry's mirror in `<hosts-dir>/<registry>/hosts.toml`; with the mirror
listed as a `[host]` it sends every request there with `?ns=<registry>` (the kubelet's path goes
through the same files). A name with no hosts.toml would make containerd look its registry up in
DNS, so `pull` refuses one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from tests.support.process import Daemon, run, run_bytes, wait_until

NAMESPACE = "test"


def write_hosts_toml(hosts_dir: Path, registry: str, server: str, mirror: str | None) -> Path:
    """`hosts_dir/registry/hosts.toml`: `server` is the registry itself, `mirror` the node."""
    lines = [f'server = "{server}"']
    if mirror:
        lines += [
            f'[host."{mirror}"]',
            '  capabilities = ["pull", "resolve"]',
            '  dial_timeout = "200ms"',
        ]
    path = hosts_dir / registry / "hosts.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


class Containerd:
    """containerd with its CRI plugin off, or, given `cri_hosts_dir`, on and reading its
    registries' hosts.toml from there (the kubelet's path: `tests.support.cri`)."""

    def __init__(self, workdir: Path, cri_hosts_dir: Path | None = None) -> None:
        self.workdir = workdir
        # A unix socket path has at most 104 bytes here: the socket gets a short directory.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="di-ctrd-"))
        self.socket = self._socket_dir / "containerd.sock"
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "config.toml"
        top, tables = 'disabled_plugins = ["io.containerd.grpc.v1.cri"]', ""
        if cri_hosts_dir is not None:
            # The sandbox image is never pulled: pulls alone need no pod.
            top = ""
            tables = f"""[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "127.0.0.1:9/pause:none"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{cri_hosts_dir}"
"""
        config.write_text(
            f"""version = 2
root = "{workdir / "root"}"
state = "{workdir / "state"}"
{top}
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
{tables}"""
        )
        self._daemon = Daemon("containerd", ["containerd", "--config", str(config)], workdir)

    def start(self) -> None:
        self._daemon.start()
        wait_until(self._answers, 20.0, "containerd answering", on_timeout=self._daemon.log_tail)

    def _answers(self) -> bool:
        if not self._daemon.running:
            raise RuntimeError(self._daemon.describe_exit())
        if not self.socket.exists():
            return False
        return run(self._ctr("version"), timeout=10, check=False).returncode == 0

    def stop(self) -> None:
        self._daemon.stop()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def log_tail(self, lines: int = 60) -> str:
        return self._daemon.log_tail(lines)

    def _ctr(self, *args: str, namespace: str = NAMESPACE) -> list[str]:
        return ["ctr", "--address", str(self.socket), "--namespace", namespace, *args]

    def pull(
        self,
        reference: str,
        hosts_dir: Path,
        *,
        namespace: str = NAMESPACE,
        platform: str | None = None,
        user: str | None = None,
        timeout: float = 180.0,
    ) -> None:
        """`ctr images pull --plain-http --hosts-dir hosts_dir [--user user:password] reference`
        (unpacks too). ctr answers any host's challenge with `--user`, mirror included."""
        registry = reference.split("/", 1)[0]
        assert (hosts_dir / registry / "hosts.toml").is_file(), (
            f"no hosts.toml for {registry}: containerd would resolve it in DNS"
        )
        args = ["images", "pull", "--plain-http", "--hosts-dir", str(hosts_dir)]
        if platform:
            args += ["--platform", platform]
        if user:
            args += ["--user", user]
        run(self._ctr(*args, reference, namespace=namespace), timeout=timeout)

    def image_digest(self, reference: str, namespace: str = NAMESPACE) -> str:
        out = run(self._ctr("images", "ls", namespace=namespace)).stdout
        for line in out.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == reference:
                return fields[2]
        raise AssertionError(f"{reference} not in containerd's images:\n{out}")

    def content_digests(self, namespace: str = NAMESPACE) -> set[str]:
        out = run(self._ctr("content", "ls", "--quiet", namespace=namespace)).stdout
        return {line.strip() for line in out.splitlines() if line.strip()}

    def verify_content(self, digest: str, size: int, namespace: str = NAMESPACE) -> None:
        """Read the blob back from containerd's content store and check size and sha256."""
        data = run_bytes(self._ctr("content", "get", digest, namespace=namespace))
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        assert actual == digest, f"containerd holds {actual} under {digest}"
        assert len(data) == size, f"containerd holds {len(data)} bytes of {digest}, want {size}"

    def manifest(self, digest: str, namespace: str = NAMESPACE) -> dict[str, object]:
        document: dict[str, object] = json.loads(
            run_bytes(self._ctr("content", "get", digest, namespace=namespace))
        )
        return document
