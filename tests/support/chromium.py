"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol: load a page, ask the
rendered DOM questions in JavaScript, take a screenshot.

It runs as root with the flags these machines need (no sandbox, no GPU) and those that keep it
from talking to anything but the page (no QUIC, no background networking, no component updates,
no sync, no proxy), with a fresh profile in a temporary directory, removed on close.

    async with Chromium(workdir) as browser:
        page = await browser.open("http://127.0.0.1:8080/")
        title = await page.evaluate("document.title")
        await page.screenshot(workdir / "page.png")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]
START_TIMEOUT = 30.0


class Page:
    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result. Events that arrive meanwhile are kept."""
        request_id = next(self._ids)
        await self._socket.send_json({"id": request_id, "method": method, "params": params})
        while True:
            message = await self._socket.receive_json(timeout=60)
            if message.get("id") == request_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._events.append(message)

    async def wait_for(self, event: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self._events):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {event} within {timeout:.0f} s")
            self._events.append(await self._socket.receive_json(timeout=remaining))

    async def navigate(self, url: str) -> None:
        await self.call("Page.enable")
        self._events.clear()
        await self.call("Page.navigate", url=url)
        await self.wait_for("Page.loadEventFired")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serializable)."""
        reply = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression[:80]}...: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def screenshot(self, path: Path, width: int = 1100) -> Path:
        """The whole page, as a PNG, `width` pixels wide."""
        height = await self.evaluate("document.documentElement.scrollHeight")
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=int(height),
            deviceScaleFactor=1,
            mobile=False,
        )
        reply = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(reply["data"]))
        return path


class Chromium:
    def __init__(self, workdir: Path) -> None:
        self._profile = workdir / "chromium-profile"
        self._log = workdir / "chromium.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._port = 0

    async def __aenter__(self) -> Chromium:
        binary = shutil.which("chromium")
        assert binary, "chromium is not installed (make install-debian installs it)"
        self._profile.mkdir(parents=True)
        argv = [binary, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"]
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        self._port = await self._debugging_port()
        self._http = aiohttp.ClientSession(trust_env=False)
        return self

    async def _debugging_port(self) -> int:
        """Chromium writes the port it picked to DevToolsActivePort in its profile."""
        marker = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            assert self._process is not None and self._process.poll() is None, self.log_tail()
            await asyncio.sleep(0.1)
        raise TimeoutError(f"chromium did not start\n{self.log_tail()}")

    async def open(self, url: str) -> Page:
        """The browser's page, navigated to `url` and loaded."""
        assert self._http is not None
        async with self._http.get(f"http://127.0.0.1:{self._port}/json/list") as response:
            targets = await response.json()
        target = next(t for t in targets if t.get("type") == "page")
        socket = await self._http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(socket)
        await page.navigate(url)
        return page

    def log_tail(self) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-30:])
        except FileNotFoundError:
            return "(no chromium log)"

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._http is not None:
            await self._http.close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGKILL)  # its renderers and helpers
        shutil.rmtree(self._profile, ignore_errors=True)
