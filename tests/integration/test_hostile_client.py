"""A client of a node is untrusted input (DESIGN section 10): whatever it sends, the node answers
at once with the right error, keeps serving everybody else, and its memory, metrics and upstream
traffic do not grow with what the client chose."""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from distributed_images.listener import SIDE_PORT_CONNECTIONS
from tests.support import rawhttp
from tests.support.fakeupstream import FakeBlob, FakeUpstream
from tests.support.images import TestImages
from tests.support.node import Node
from tests.support.process import LOOPBACK, free_port
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

APP = TestImages.APP
# Far more than a client needs to be answered; a backtracking parser needed hours for these.
PROMPT = 10.0
# The files a node's process may open, in the connection test: few, so that a client can take
# them all; what the node accepts must stay within them.
FILE_LIMIT = 256
IDLE_ON_METRICS_PORT = 100


@pytest.fixture
def node(shared_node: Node) -> Node:
    return shared_node


@pytest.mark.parametrize(
    "ns",
    [
        "a" * 40 + "!",  # a host name's labels: 2^40 ways to split them
        "a-" * 2000 + "!",
        "a." * 2000 + "-",
        "[" + ":" * 4000,
    ],
)
async def test_a_pathological_ns_is_refused_at_once_and_the_node_keeps_serving(
    node: Node, upstream: Registry, ns: str
) -> None:
    mark = upstream.mark()
    refused = asyncio.create_task(
        rawhttp.request(node.host, "GET", f"/v2/{APP}/manifests/1?ns={ns}", timeout=PROMPT)
    )
    health = await rawhttp.request(node.host, "GET", "/healthz", timeout=PROMPT)
    assert health.status == 200
    response = await refused
    assert response.status == 400, response
    assert response.json() == {
        "errors": [
            {
                "code": "NAME_INVALID",
                "message": "invalid registry namespace",
                "detail": {"ns": ns[:255]},
            }
        ]
    }
    assert upstream.entries(mark) == []


# -- bounds: what a client's requests can make a node do at once, and remember


# --cold-fetches caps the blobs fetched at once (their GETs; a blob's size is asked before it
# waits its turn), --upstream-connections every request to the registry.
@pytest.mark.parametrize(
    ("flags", "method", "most"),
    [
        (["--cold-fetches", "2"], "GET", 2),
        (["--cold-fetches", "16", "--upstream-connections", "3"], "*", 3),
    ],
)
async def test_cold_fetches_and_upstream_connections_are_capped(
    node_factory: Callable[..., Node],
    fake_upstream: FakeUpstream,
    flags: list[str],
    method: str,
    most: int,
) -> None:
    node = _behind(node_factory, fake_upstream, extra_args=flags)
    blobs = [FakeBlob(random.Random(i).randbytes(512 << 10), rate=2 << 20) for i in range(8)]
    digests = [fake_upstream.add(blob) for blob in blobs]
    async with aiohttp.ClientSession() as session:
        bodies = await asyncio.gather(
            *(_read(session, f"{node.url}/v2/test/many/blobs/{d}") for d in digests)
        )
    assert [_sha256(body) for body in bodies] == digests  # every client served, in turn
    assert 2 <= fake_upstream.most_in_flight(method) <= most


async def test_client_chosen_namespaces_and_upstream_statuses_add_no_metric_labels(
    node_factory: Callable[..., Node], fake_upstream: FakeUpstream
) -> None:
    node = _behind(node_factory, fake_upstream, extra_args=["--upstream-retries", "0"])
    for status in (299, 418, 451, 599, 999):
        fake_upstream.answer_with(f"/v2/test/odd/manifests/{status}", status)
        await rawhttp.request(node.host, "GET", f"/v2/test/odd/manifests/{status}")
    for i in range(50):
        await rawhttp.request(node.host, "GET", f"/v2/{APP}/manifests/1?ns=client{i}.example")
    metrics = node.metrics()
    codes = {
        key.partition('code="')[2].partition('"')[0]
        for key in metrics
        if key.startswith("distributed_images_upstream_requests_total{")
    }
    assert codes == {"2xx", "4xx", "5xx", "other"}
    registries = {
        key.partition('registry="')[2].partition('"')[0]
        for key in metrics
        if key.startswith("distributed_images_upstream_requests_total{")
    }
    assert registries == {fake_upstream.host}
    assert not [key for key in metrics if "client" in key.partition("{")[2]]  # no ns as a label


async def test_connections_a_client_opens_and_leaves_idle_lock_no_other_client_out(
    node_factory: Callable[..., Node], fake_upstream: FakeUpstream
) -> None:
    node = _behind(node_factory, fake_upstream, wrapper=["prlimit", f"--nofile={FILE_LIMIT}", "--"])
    digest = fake_upstream.add(FakeBlob(random.Random(0).randbytes(256 << 10)))
    with _idle_connections(node, FILE_LIMIT + 40) as idle:
        timeout = aiohttp.ClientTimeout(total=PROMPT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            body = await _read(session, f"{node.url}/v2/test/idle/blobs/{digest}")
            assert _sha256(body) == digest
            health = await session.get(f"{node.url}/healthz")
            assert health.status == 200
        closed = sum(1 for sock in idle if _closed_by_peer(sock))
    assert closed > 0  # the node made room by closing idle connections...
    shed = node.metric("distributed_images_client_connections_shed_total", reason="idle")
    assert shed == closed
    assert node.running  # ...and never ran out of files


async def test_idle_connections_to_the_metrics_port_take_only_its_few_files(
    node_factory: Callable[..., Node], fake_upstream: FakeUpstream
) -> None:
    """A scraper and probes need a few connections: the metrics port is not given the registry
    port's share of the file limit again."""
    metrics_port = free_port()
    node = _behind(
        node_factory, fake_upstream, extra_args=["--metrics-listen", f"{LOOPBACK}:{metrics_port}"]
    )
    with _idle_connections(node, IDLE_ON_METRICS_PORT, metrics_port, pace=0.01) as idle:
        scrape = await rawhttp.request(f"{LOOPBACK}:{metrics_port}", "GET", "/metrics")
        assert scrape.status == 200
        closed = sum(1 for sock in idle if _closed_by_peer(sock))
    assert closed >= IDLE_ON_METRICS_PORT + 1 - SIDE_PORT_CONNECTIONS
    assert node.metric("distributed_images_client_connections_shed_total", reason="idle") == closed


def test_a_node_raises_its_open_file_limit_to_what_the_host_allows(
    node_factory: Callable[..., Node], fake_upstream: FakeUpstream
) -> None:
    """The soft limit of 1024 many systems set is there for select(); the node uses epoll."""
    node = _behind(
        node_factory,
        fake_upstream,
        wrapper=["prlimit", f"--nofile={FILE_LIMIT}:{16 * FILE_LIMIT}", "--"],
    )
    limits = Path(f"/proc/{node.pid}/limits").read_text().splitlines()
    files = next(line for line in limits if line.startswith("Max open files")).split()
    assert files[3:5] == [str(16 * FILE_LIMIT)] * 2  # soft, hard


def _behind(node_factory: Callable[..., Node], fake_upstream: FakeUpstream, **kwargs: Any) -> Node:
    """A node whose one registry is the fake upstream."""
    return node_factory({fake_upstream.host: fake_upstream.url}, fake_upstream.host, **kwargs)


@contextmanager
def _idle_connections(
    node: Node, count: int, port: int | None = None, pace: float = 0.0
) -> Iterator[list[socket.socket]]:
    """`count` connections to the node (its registry port unless `port`) that never send a byte,
    `pace` seconds apart (a node counts those it accepts in one go only from its next turn)."""
    host, _, registry_port = node.host.rpartition(":")
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            address = (host, port or int(registry_port))
            opened.append(socket.create_connection(address, timeout=PROMPT))
            time.sleep(pace)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


async def _read(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as response:
        assert response.status == 200, response.status
        return await response.read()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
