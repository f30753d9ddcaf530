"""containerd wired to a node by `containerd-config`, as the chart's init container does it, and
`doctor` judging that wiring: a real containerd, a real node, a real tracker, a real registry.

The bypass cases matter most: containerd falls back to the registry silently, so a pull that
succeeds proves nothing; the registry's access log (containerd's user agent) and the node's
metrics tell who fetched the bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.containerd import Containerd
from tests.support.images import TestImages
from tests.support.node import Node
from tests.support.process import Daemon, free_port, http_status, run, wait_until
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "distributed_images.cli"]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DI_")}
    return run([*CLI, *args], timeout=60, env=env, check=check)


def containerd_config(hosts_dir: Path, mirror: str, registry: str) -> None:
    cli(
        "containerd-config",
        "--hosts-dir",
        str(hosts_dir),
        "--mirror",
        mirror,
        "--registry",
        registry,
    )


def kubelet_config(path: Path, hosts_dir: Path) -> Path:
    """A containerd config whose CRI plugin (the kubelet's path) reads `hosts_dir`."""
    path.write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n'
        f'  config_path = "{hosts_dir}"\n'
    )
    return path


def containerd_requests(upstream: Registry, since: int) -> list[str]:
    """Requests containerd sent to the registry itself: a pull that bypassed the node."""
    return [e.uri for e in upstream.entries(since) if "containerd" in e.user_agent.lower()]


@pytest.fixture
def tracker(workdir: Path) -> Iterator[str]:
    """A real `distributed-images tracker` on loopback; yields its gRPC HOST:PORT."""
    grpc_address, http_port = f"127.0.0.1:{free_port()}", free_port()
    argv = [*CLI, "tracker", "--listen", grpc_address, "--http-listen", f"127.0.0.1:{http_port}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DI_")}
    daemon = Daemon("tracker", argv, workdir / "tracker", env=env)
    daemon.start()
    try:
        wait_until(
            lambda: http_status(f"http://127.0.0.1:{http_port}/healthz", timeout=1.0) == 200,
            30.0,
            "tracker answering /healthz",
            on_timeout=daemon.log_tail,
        )
        yield grpc_address
    finally:
        daemon.stop()


def test_containerd_pulls_through_the_node_that_containerd_config_names(
    node: Node, upstream: Registry, containerd: Containerd, test_images: TestImages, workdir: Path
) -> None:
    hosts = workdir / "certs.d"
    containerd_config(hosts, node.url, upstream.host)
    reference = f"{upstream.host}/{test_images.APP}:1"
    image = test_images.app.image()
    mark = upstream.mark()

    containerd.pull(reference, hosts)

    assert containerd_requests(upstream, mark) == []
    assert containerd.image_digest(reference) == test_images.app.digest
    for digest, size in image.blobs.items():
        containerd.verify_content(digest, size)
    assert node.metric("distributed_images_blob_bytes_total") == image.blob_bytes
    assert node.metric("distributed_images_blob_bytes_total", source="upstream") > 0
    assert node.metric("distributed_images_requests_total", endpoint="manifest") >= 1

    cli("containerd-config", "--hosts-dir", str(hosts), "--registry", upstream.host, "--remove")
    assert list(hosts.rglob("*")) == []


def test_a_dead_node_is_bypassed_silently_and_doctor_reports_it(
    upstream: Registry, containerd: Containerd, test_images: TestImages, workdir: Path
) -> None:
    hosts = workdir / "certs.d"
    dead = f"http://127.0.0.1:{free_port()}"
    containerd_config(hosts, dead, upstream.host)
    mark = upstream.mark()

    containerd.pull(f"{upstream.host}/{test_images.APP}:1", hosts)  # succeeds: the fallback

    assert containerd_requests(upstream, mark), "containerd should have gone to the registry"
    config = kubelet_config(workdir / "config.toml", hosts)
    result = cli("doctor", "--containerd-config", str(config), "--node", dead, check=False)
    assert result.returncode == 1, result.stdout
    assert f"hosts.toml for {upstream.host}" in result.stdout
    assert "does not answer /v2/: containerd falls back silently" in result.stdout
    assert f"FAIL  node {dead}: not answering" in result.stdout


def test_doctor_flags_a_containerd_whose_cri_has_no_config_path(
    upstream: Registry, containerd: Containerd, workdir: Path
) -> None:
    hosts = workdir / "certs.d"
    containerd_config(hosts, "http://127.0.0.1:8080", upstream.host)
    # The running daemon's own config: `ctr --hosts-dir` works with it, the kubelet would not.
    config = containerd.workdir / "config.toml"
    args = ["doctor", "--containerd-config", str(config), "--hosts-dir", str(hosts)]
    result = cli(*args, "--node", f"http://127.0.0.1:{free_port()}", check=False)
    assert result.returncode == 1, result.stdout
    assert f"FAIL  containerd config {config}: config_path is not set" in result.stdout
    assert f'config_path = "{hosts}"' in result.stdout  # the fix names the setting


def test_doctor_passes_a_host_wired_through_a_live_node_and_tracker(
    node: Node, upstream: Registry, tracker: str, workdir: Path
) -> None:
    hosts = workdir / "certs.d"
    containerd_config(hosts, node.url, upstream.host)
    config = kubelet_config(workdir / "config.toml", hosts)
    args = ["doctor", "--containerd-config", str(config), "--node", node.url]

    healthy = cli(*args, "--tracker", tracker, check=False)
    assert healthy.returncode == 0, healthy.stdout
    assert "FAIL" not in healthy.stdout and "gRPC health: SERVING" in healthy.stdout

    nobody = f"127.0.0.1:{free_port()}"
    broken = cli(*args, "--tracker", nobody, "--timeout", "1", check=False)
    assert broken.returncode == 1, broken.stdout
    assert f"FAIL  tracker {nobody}: gRPC health: UNAVAILABLE" in broken.stdout
