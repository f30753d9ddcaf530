"""The real `distributed-images tracker`, `status` and `preheat` processes, with node membership
running in the test's own loop (what `distributed-images node` runs inside)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from node.config import ClusterConfig
from node.membership import Membership
from tests.support.certs import write_self_signed
from tests.support.cluster import process_environment
from tests.support.process import Daemon, free_port, http_status
from tracker.app import HANDSHAKE_SECONDS
from tracker.client import HeldBlob, Inventory, SeededRef, TrackerClient
from tracker.errors import TrackerUnavailable

pytestmark = pytest.mark.integration

D = "sha256:" + "d" * 64
CLI = [sys.executable, "-m", "distributed_images.cli"]
CLEAN_ENV = process_environment()  # this checkout first on the path, no DI_* of the machine


class TrackerProcess:
    def __init__(
        self, workdir: Path, secret_file: Path | None = None, extra_args: tuple[str, ...] = ()
    ) -> None:
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
            *extra_args,
        ]
        env = dict(CLEAN_ENV, DI_SECRET_FILE=str(secret_file)) if secret_file else CLEAN_ENV
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
    i: int, tracker: str, credential: Path | None = None, preheated: list[str] | None = None
) -> Membership:
    async def inventory() -> Inventory:
        return Inventory((HeldBlob(D, 100, 1, (0,)),), (SeededRef("app:1", D),))

    async def preheat(image: str) -> None:
        if image.startswith("broken"):
            raise RuntimeError("no such image")
        if preheated is not None:
            preheated.append(image)

    config = ClusterConfig(
        tracker=tracker, credential_file=credential, peer_listen=f"127.0.0.1:{7200 + i}", zone="z1"
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


async def until_nodes(tracker: str, count: int, credential: str | None = None) -> None:
    """Poll in-process (each CLI run costs a second of start-up) until `count` nodes hold a blob."""
    client = TrackerClient(tracker, credential=credential)
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


async def test_credentials_are_enforced_when_the_tracker_has_a_secret(workdir: Path) -> None:
    secret, node, operator = workdir / "secret", workdir / "node.cred", workdir / "ops.cred"
    assert (await cli("credential", "--secret-file", str(secret), "--new-secret"))[0] == 0
    assert secret.stat().st_mode & 0o777 == 0o600
    issue = ("credential", "--secret-file", str(secret))
    assert (await cli(*issue, "--node", "127.0.0.1:8201", "--out", str(node)))[0] == 0
    assert (await cli(*issue, "--operator", "ops", "--out", str(operator)))[0] == 0
    code, _, err = await cli(*issue, "--node", "127.0.0.1:8201", "--out", str(node))
    assert code == 2 and "cannot create" in err, "an existing credential is never replaced"
    tracker = TrackerProcess(workdir, secret_file=secret)
    try:
        await tracker.start()
        async with members([member(1, tracker.address, credential=node)]):
            code, _, err = await cli("status", "--tracker", tracker.address)
            assert code == 1 and "credential" in err
            code, _, err = await cli("status", "--tracker", tracker.address, "--credential-file",
                                     str(node))  # fmt: skip
            assert code == 1 and "operator" in err, "a node may not ask for the status"
            await until_nodes(tracker.address, 1, credential=operator.read_text().strip())
            env = dict(CLEAN_ENV, DI_CREDENTIAL_FILE=str(operator))
            nodes = await status_nodes(tracker.address, env=env)
            assert [n["id"] for n in nodes] == ["127.0.0.1:8201"]
    finally:
        tracker.daemon.stop()
    assert secret.read_text().strip() not in tracker.daemon.log_tail(1000)


async def test_a_tracker_with_an_unusable_secret_says_so_in_one_line(workdir: Path) -> None:
    short = workdir / "short"
    short.write_text("too short\n")
    for secret in (short, workdir / "missing"):
        code, out, err = await cli("tracker", "--secret-file", str(secret), "--http-listen", "")
        assert code == 1, out + err
        assert "Traceback" not in err and "secret" in err and "too short" not in err


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


async def test_a_connection_that_never_says_a_word_is_closed_soon(
    tracker_process: TrackerProcess,
) -> None:
    """A client that opens TCP connections to the gRPC port and sends nothing held a file each
    for 120 s (gRPC's default): enough of them and no node could connect."""
    await tracker_process.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", tracker_process.port)
    started = time.monotonic()
    try:
        assert await asyncio.wait_for(reader.read(), HANDSHAKE_SECONDS + 20) is not None
    finally:
        writer.close()
    assert time.monotonic() - started < HANDSHAKE_SECONDS + 5


async def test_connections_that_fail_the_tls_handshake_leave_no_line_each(workdir: Path) -> None:
    """Any client may open connections to the TLS port and send garbage: gRPC's C core printed
    one line for each failed handshake, so a client could make the tracker's log as long as it
    liked. The core's own lines below its errors are off unless GRPC_VERBOSITY asks for them."""
    cert, key = write_self_signed(workdir)
    tracker = TrackerProcess(workdir, extra_args=("--tls-cert", str(cert), "--tls-key", str(key)))
    await tracker.start()
    try:
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", tracker.port)
            writer.write(b"GET / HTTP/1.1\r\n\r\n")
            await asyncio.wait_for(reader.read(), 10)
            writer.close()
        await asyncio.sleep(0.5)
        assert tracker.daemon.running
    finally:
        tracker.daemon.stop()
    log = tracker.daemon.log_tail(1000)
    assert "tracker ready" in log and "tls=True" in log
    assert "Handshake failed" not in log


async def test_a_tracker_that_stays_unreachable_is_said_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A node retries an unreachable tracker every few seconds, for as long as it is down: a
    warning at each try made thousands of the same line in a few hours. The first try says so;
    the next line comes a minute later at most, with how many tries failed since."""
    caplog.set_level(logging.INFO, logger="node.membership")
    async with members([member(0, f"127.0.0.1:{free_port()}")]):
        await asyncio.sleep(4.0)  # tries at about 0, 0.2, 0.6, 1.4 and 3 s
    lines = [r for r in caplog.records if r.getMessage().startswith("tracker unreachable")]
    assert [(r.levelno, r.__dict__.get("times")) for r in lines] == [(logging.WARNING, 1)]
