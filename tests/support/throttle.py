"""A slow link to a registry: a TCP proxy on 127.0.0.1 that passes what the registry sends back
to its clients at `rate` bytes a second in all, as a remote region or an edge site's uplink
would. Requests go through unthrottled. It runs on a thread with an event loop of its own.

    with Throttle(registry.host, rate=400_000) as link:
        link.url   # http://127.0.0.1:PORT, to give nodes as the registry's address
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from tests.support.process import LOOPBACK

BLOCK = 16 << 10  # bytes passed at a time


class _Bucket:
    """Tokens for `rate` bytes a second shared by every connection, with a burst of one block."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._tokens = float(BLOCK)
        self._at = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, amount: int) -> None:
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(float(BLOCK), self._tokens + (now - self._at) * self._rate)
            self._at = now
            self._tokens -= amount
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / self._rate)


class Throttle:
    def __init__(self, target: str, rate: int) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self._rate = rate
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __enter__(self) -> Throttle:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _listen(self) -> asyncio.Server:
        self._bucket = _Bucket(self._rate)
        self._connections: set[asyncio.Task[None]] = set()
        return await asyncio.start_server(self._serve, LOOPBACK, 0)

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            registry_in, registry_out = await asyncio.open_connection(*self._target)
        except OSError:
            client_out.close()
            self._connections.discard(task)
            return
        try:
            await asyncio.gather(
                _pipe(client_in, registry_out, None), _pipe(registry_in, client_out, self._bucket)
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (client_out, registry_out):
                writer.close()
            self._connections.discard(task)


async def _pipe(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, bucket: _Bucket | None
) -> None:
    while data := await source.read(BLOCK):
        if bucket is not None:
            await bucket.take(len(data))
        sink.write(data)
        await sink.drain()
    with contextlib.suppress(OSError):
        if sink.can_write_eof():
            sink.write_eof()
