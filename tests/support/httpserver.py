"""An aiohttp application served from a background thread on a free loopback port.

Tests drive real processes with blocking calls (skopeo, ctr) as well as with aiohttp, so small
servers written in the test code (the token server, fake upstreams) run on their own event loop
in their own thread, and work the same from sync and async tests.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from aiohttp import web

from tests.support.process import LOOPBACK


class BackgroundServer:
    def __init__(self, make_app: Callable[[], web.Application], host: str = LOOPBACK) -> None:
        self._make_app = make_app
        self.host = host
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start())
            except BaseException as e:
                failure.append(e)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._cleanup())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=serve, name=f"server-{id(self)}", daemon=True)
        self._thread.start()
        started.wait(30)
        if failure:
            raise failure[0]

    async def _start(self) -> None:
        # shutdown_timeout: a slow fake upstream may be mid-response when the test ends.
        self._runner = web.AppRunner(self._make_app(), shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        self._loop = self._thread = None
