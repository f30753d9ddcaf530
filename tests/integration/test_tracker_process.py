"""The real `distributed-images tracker`, `status` and `preheat` processes, with node membership
running in the test's own loop (what `distributed-images node` runs inside)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from node.config import ClusterConfig
from node.membership import Membership
from tests.support.process import Daemon, free_port, http_status
from tracker.client import HeldBlob, Inventory, SeededRef, TrackerClient
from tracker.errors import TrackerUnavailable

pytestmark = pytest.mark.integration

D = "sha256:" + "d" * 64
CLI = [sys.executable, "-m", "distributed_images.cli"]
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("DI_")}


class TrackerProcess:
    def __init__(self, workdir: Path, token: str | None = None) -> None:
        self.port = free_port()
        self.http_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        argv = [
            *CLI,
            "tracker",
            "--listen",
            self.address,
            "--http-listen",
            f"127.0.0.1:{self.http_port}",
            "--heartbeat-interval",
            "0.2",
            "--node-ttl",
            "2",
            "--log-level",
            "debug",
        ]
        env = dict(CLEAN_ENV, DI_TOKEN=token) if token else CLEAN_ENV
        self.daemon = Daemon("tracker", argv, workdir, env=env, cwd=workdir)

    async def start(self) -> None:
        self.daemon.start()
        for _ in range(300):
            assert self.daemon.running, self.daemon.describe_exit()
            url = f"http://127.0.0.1:{self.http_port}/healthz"
            if await asyncio.to_thread(http_status, url, 1.0) == 200:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"tracker not healthy\n{self.daemon.log_tail()}")


@pytest.fixture
def tracker_process(workdir: Path) -> Iterator[TrackerProcess]:
    process = TrackerProcess(workdir)
    yield process
    process.daemon.stop()


def member(
    i: int, tracker: str, token: str | None = None, preheated: list[str] | None = None
) -> Membership:
    async def inventory() -> Inventory:
        return Inventory((HeldBlob(D, 100, 1, (0,)),), (SeededRef("app:1", D),))

    async def preheat(image: str) -> None:
        if image.startswith("broken"):
            raise RuntimeError("no such image")
        if preheated is not None:
            preheated.append(image)

    config = ClusterConfig(
        tracker=tracker, token=token, peer_listen=f"127.0.0.1:{7200 + i}", zone="z1"
    )
    return Membership(config, f"127.0.0.1:{8200 + i}", inventory, preheat=preheat)


@contextlib.asynccontextmanager
async def members(memberships: list[Membership]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(m.run()) for m in memberships]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def read(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read()).decode()


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or CLEAN_ENV,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def status_nodes(
    tracker: str, *extra: str, env: dict[str, str] | None = None
) -> list[dict[str, object]]:
    code, out, err = await cli("status", "--tracker", tracker, "--json", *extra, env=env)
    assert code == 0, err
    nodes: list[dict[str, object]] = json.loads(out)["nodes"]
    return nodes


async def until_nodes(tracker: str, count: int, token: str | None = None) -> None:
    """Poll in-process (each CLI run costs a second of start-up) until `count` nodes hold a blob."""
    client = TrackerClient(tracker, token=token)
    try:
        for _ in range(100):
            with contextlib.suppress(TrackerUnavailable):
                nodes = (await client.status()).nodes
                if len(nodes) == count and all(n.blobs == 1 for n in nodes):
                    return
            await asyncio.sleep(0.1)
    finally:
        await client.close()
    raise AssertionError(f"the tracker never showed {count} nodes holding a blob")


async def test_status_shows_the_nodes_again_after_a_tracker_restart(
    tracker_process: TrackerProcess,
) -> None:
    await tracker_process.start()
    memberships = [member(i, tracker_process.address) for i in range(3)]
    async with members(memberships):
        await until_nodes(tracker_process.address, 3)
        nodes = await status_nodes(tracker_process.address)
        assert {n["id"] for n in nodes} == {m.node_id for m in memberships}
        first = nodes[0]
        assert set(first) >= {"id", "registry", "peer", "zone", "blobs"}
        assert (first["zone"], first["registry"]) == ("z1", first["id"])
        assert str(first["peer"]).startswith("127.0.0.1:72")

        tracker_process.daemon.kill()  # a crash: the tracker's state is gone
        await tracker_process.start()
        await until_nodes(tracker_process.address, 3)
        assert all(m.joins >= 2 for m in memberships)
        code, table, _ = await cli("status", "--tracker", tracker_process.address)
        assert code == 0 and all(m.node_id in table for m in memberships)
        assert {n["id"] for n in await status_nodes(tracker_process.address)} == {
            m.node_id for m in memberships
        }
        metrics = await asyncio.to_thread(
            read, f"http://127.0.0.1:{tracker_process.http_port}/metrics"
        )
        assert "distributed_images_tracker_nodes 3.0" in metrics
    assert tracker_process.daemon.stop() == 0, "SIGTERM stops the tracker cleanly"


async def test_status_fails_clearly_when_the_tracker_is_down() -> None:
    code, _, err = await cli("status", "--tracker", f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert code == 1 and "status:" in err


async def test_the_token_is_enforced_when_set(workdir: Path) -> None:
    tracker = TrackerProcess(workdir, token="t0ken")
    try:
        await tracker.start()
        async with members([member(1, tracker.address, token="t0ken")]):
            code, _, err = await cli("status", "--tracker", tracker.address)
            assert code == 1 and "token" in err
            code, _, _ = await cli("status", "--tracker", tracker.address, "--token", "wrong")
            assert code == 1
            await until_nodes(tracker.address, 1, token="t0ken")
            nodes = await status_nodes(tracker.address, env=dict(CLEAN_ENV, DI_TOKEN="t0ken"))
            assert [n["id"] for n in nodes] == ["127.0.0.1:8201"]
    finally:
        tracker.daemon.stop()


async def test_preheat_waits_until_the_nodes_are_done(tracker_process: TrackerProcess) -> None:
    await tracker_process.start()
    preheated: list[str] = []
    async with members([member(i, tracker_process.address, preheated=preheated) for i in range(3)]):
        await until_nodes(tracker_process.address, 3)
        args = ("preheat", "--tracker", tracker_process.address, "--wait")
        code, out, err = await cli(*args, "docker.io/library/app:1", "--nodes", "2")
        assert code == 0, out + err
        assert "2 done, 0 failed" in out
        assert preheated == ["docker.io/library/app:1"] * 2
        code, out, _ = await cli(*args, "broken:1", "--zone", "z1")
        assert code == 1 and "0 done, 3 failed" in out and "no such image" in out
