"""SIGTERM stops a node within its grace period, whatever it is doing: mid-pull, and even with
its event loop stuck."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from node.app import SHUTDOWN_GRACE
from tests.support.fakeupstream import FakeBlob, FakeUpstream
from tests.support.node import CHECKOUT, Node

pytestmark = pytest.mark.integration


async def test_sigterm_stops_a_node_mid_pull_within_its_grace_period(
    node_factory: Callable[..., Node], fake_upstream: FakeUpstream
) -> None:
    node = node_factory({fake_upstream.host: fake_upstream.url}, fake_upstream.host)
    blob = FakeBlob(random.Random("slow").randbytes(32 << 20), rate=1 << 20)  # 32 s to send
    digest = fake_upstream.add(blob)
    host, _, port = node.host.rpartition(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET /v2/test/slow/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        while fake_upstream.bytes_sent(digest) == 0:
            await asyncio.sleep(0.05)
        started = time.monotonic()
        code = await asyncio.to_thread(node.stop, SHUTDOWN_GRACE + 3)
        stopped = time.monotonic() - started
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert code == 0, f"exit code {code} after {stopped:.1f} s"
    assert "node stopped" in node.log_path.read_text()


def test_a_node_whose_event_loop_is_stuck_exits_once_its_grace_period_is_over(
    tmp_path: Path,
) -> None:
    script = textwrap.dedent(
        """
        import asyncio, logging, sys, time
        from node.shutdown import Shutdown

        async def main():
            Shutdown(grace=1.0).install()
            print("ready", flush=True)
            time.sleep(120)  # the loop is stuck: no loop-level handler could run

        logging.basicConfig(stream=sys.stderr)
        asyncio.run(main())
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=CHECKOUT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=10)
        finally:
            process.kill()
    assert process.returncode == 1
    assert "still stopping after its grace period of 1 s" in stderr
