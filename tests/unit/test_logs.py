"""Log lines: one line per event whatever a client put in its request, and a request aiohttp
cannot parse is one line at info, not an error with a traceback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from distributed_images import logs
from distributed_images.logs import LogfmtFormatter


def _line(**fields: object) -> str:
    record = logging.LogRecord("node", logging.INFO, __file__, 1, "request failed", None, None)
    record.__dict__.update(fields)
    return LogfmtFormatter().format(record)


@given(st.text())
def test_a_value_a_client_chose_stays_on_its_line_and_prints(path: str) -> None:
    line = _line(path=path)
    assert line.isprintable(), repr(line)  # no CR, LF, escape sequence or line separator
    assert line.startswith("ts=") and "msg=" in line


def test_control_characters_are_written_as_escapes() -> None:
    line = _line(path="/v2/x\r\nts=forged level=error\x1b[2J")
    assert 'path="/v2/x\\x0d\\nts=forged level=error\\x1b[2J"' in line


@pytest.fixture
def node_logs() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    server = logging.getLogger("aiohttp.server")
    filters = server.filters[:]
    logs.setup("info")
    yield
    root.handlers[:], server.filters[:] = handlers, filters
    root.setLevel(level)


async def _sent_to_a_server(request: bytes) -> bytes:
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        answer = await reader.read()
        writer.close()
    finally:
        await runner.cleanup()
    return answer


async def test_a_request_aiohttp_cannot_parse_is_one_line_at_info(
    node_logs: None, caplog: pytest.LogCaptureFixture
) -> None:
    answer = await _sent_to_a_server(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nAccept: \x01\x02\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer
    refused = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [(r.levelno, r.getMessage(), r.exc_info) for r in refused] == [
        (logging.INFO, "malformed request refused", None)
    ]
    assert "Invalid header value char" in refused[0].__dict__["error"]


async def test_a_client_trying_https_first_is_no_news(
    node_logs: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Docker and podman, told a registry is insecure, open each pull with a TLS handshake and
    fall back to plain HTTP: that is how they work, so it is a line at debug, none at info."""
    client_hello = bytes.fromhex("16030100a5010000a10303") + bytes(32) + b"\x00\x00\x02\x13\x01"
    for level in (logging.INFO, logging.DEBUG):
        caplog.clear()
        logging.getLogger().setLevel(level)
        answer = await _sent_to_a_server(client_hello)
        assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer
        await asyncio.sleep(0.05)
        records = [r for r in caplog.records if r.name == "aiohttp.server"]
        refused = [(r.levelno, r.getMessage()) for r in records]
        expected = "TLS handshake on the plain HTTP port refused (a client trying HTTPS first)"
        assert refused == ([] if level == logging.INFO else [(logging.DEBUG, expected)])


def test_a_throttle_says_a_repeated_event_once_per_interval_with_its_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: now[0])
    throttle = logs.Throttle(60.0)
    said = []
    for step in range(0, 150, 10):  # every 10 s for 140 s
        now[0] = 1000.0 + step
        said.append(throttle.due())
    assert said == [1, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 6, 0, 0]
    throttle.reset()
    assert throttle.due() == 1
