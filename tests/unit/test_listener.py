"""The HTTP listener bounds its client connections: idle ones and unfinished request heads are
closed after the idle time, a new connection at the limit takes the place of the one idle longest,
and a connection in the middle of a request is never closed for another."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from distributed_images import listener

LIMIT = 3


class Server:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.shed: list[str] = []
        self.port = 0
        self.clients: list[asyncio.StreamWriter] = []

    async def connect(self, port: int = 0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port or self.port)
        self.clients.append(writer)
        return reader, writer

    async def quick(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def slow(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first part\n")
        await self.release.wait()
        await response.write(b"last part\n")
        return response


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    served = Server()
    app = web.Application()
    app.router.add_get("/quick", served.quick)
    app.router.add_get("/slow", served.slow)
    connections = listener.Connections(LIMIT, served.shed.append)
    runner, site = await listener.start(app, "127.0.0.1", 0, connections)
    served.port = site.port
    try:
        yield served
    finally:
        served.release.set()
        for writer in served.clients:
            writer.close()
        await runner.cleanup()


async def _get(connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], path: str) -> bytes:
    """The response's status line and headers, the connection kept open."""
    reader, writer = connection
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


async def _closed(connection: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> bool:
    reader, _ = connection
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


async def test_a_new_connection_at_the_limit_closes_the_one_idle_longest(server: Server) -> None:
    idle = [await server.connect() for _ in range(LIMIT)]
    await asyncio.sleep(0.1)  # all three accepted
    newcomer = await server.connect()
    assert (await _get(newcomer, "/quick")).startswith(b"HTTP/1.1 200")
    assert await _closed(idle[0])
    assert server.shed == ["idle"]
    for still in idle[1:]:  # the others are left alone
        assert (await _get(still, "/quick")).startswith(b"HTTP/1.1 200")


async def test_a_connection_in_a_request_is_never_closed_for_another(server: Server) -> None:
    busy = [await server.connect() for _ in range(LIMIT)]
    for connection in busy:
        assert (await _get(connection, "/slow")).startswith(b"HTTP/1.1 200")
    refused = await server.connect()
    answer = await asyncio.wait_for(refused[0].read(), 5)
    assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer
    assert server.shed == ["all_busy"]
    server.release.set()
    for reader, _ in busy:  # every transfer ends whole
        assert await asyncio.wait_for(reader.readuntil(b"last part\n"), 5)


async def test_a_request_head_never_finished_is_closed_after_the_idle_time(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listener, "IDLE_SECONDS", 0.5)
    app = web.Application()
    connections = listener.Connections(LIMIT)
    runner, site = await listener.start(app, "127.0.0.1", 0, connections)
    try:
        reader, writer = await server.connect(site.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        silent = await server.connect(site.port)
        assert await _closed((reader, writer))
        assert await _closed(silent)
    finally:
        await runner.cleanup()


def test_the_limit_leaves_room_in_the_process_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listener.resource, "getrlimit", lambda _: (1024, 1024))
    # 64 of the 320 files set aside are a side port's, 128 the backlog
    assert listener.Connections(1024).limit == (1024 - 320 - 128) // 2
    assert listener.Connections(10).limit == 10
