"""A node whose registry API listens on its host's loopback only (the chart's default with
hostNetwork): its probes and metrics are served on another address, and nothing else is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.node import Node
from tests.support.process import free_port, http_get, http_status

pytestmark = pytest.mark.integration

HOST_ADDRESS = "127.0.0.30"  # stands for the host's own address, as other hosts reach it
NOWHERE = {"127.0.0.1:9": "http://127.0.0.1:9"}


@pytest.fixture
def loopback_node(node_command: None, workdir: Path) -> Iterator[tuple[Node, int]]:
    metrics_port = free_port(HOST_ADDRESS)
    node = Node(
        workdir / "node",
        NOWHERE,
        "127.0.0.1:9",
        extra_args=["--metrics-listen", f"{HOST_ADDRESS}:{metrics_port}"],
    )
    node.start()
    yield node, metrics_port
    node.stop()
    print(node.log_tail())


def test_the_registry_api_stays_on_loopback_while_probes_and_metrics_are_reachable(
    loopback_node: tuple[Node, int],
) -> None:
    node, metrics_port = loopback_node
    exposed = f"http://{HOST_ADDRESS}:{metrics_port}"
    assert http_status(f"{exposed}/readyz") == 200
    assert http_status(f"{exposed}/healthz") == 200
    assert b"distributed_images_requests_total" in http_get(f"{exposed}/metrics")
    assert http_status(f"{exposed}/v2/") == 404, "the registry API is not on the exposed port"
    assert http_status(f"http://{HOST_ADDRESS}:{node.port}/v2/") is None, "nor on its address"
    assert http_status(f"{node.url}/v2/") == 200
