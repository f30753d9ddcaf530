"""An HTTP port whose client connections are bounded (DESIGN section 10: clients are untrusted).

A client could otherwise open connections and leave them idle, or never finish a request's head,
until the process has no file left to open: no other client is then accepted, and the node can
open neither its chunk files nor its peers' connections. Here:

- a connection idle for IDLE_SECONDS is closed, also one that has not sent a whole request head
  by then (a slow-loris client);
- at most `limit` connections are open at once, and never more than the process's file limit
  leaves room for: at the limit, a new connection takes the place of the one idle longest, so
  idle connections never lock a client out; when every connection is in the middle of a request,
  the new one is answered 503 with Retry-After and closed, as a server out of capacity does.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from distributed_images import logs

log = logging.getLogger(__name__)

IDLE_SECONDS = 60.0
# A port for probes and scrapes (a node's --metrics-listen, a tracker's --http-listen): a few
# callers, so a few connections, and they come out of the process's reserve below.
SIDE_PORT_CONNECTIONS = 64
# Connections accepted in one turn of the event loop are counted only from the next: the limit
# leaves the process room for as many again, and for its own files and a side port.
BACKLOG = 128
RESERVED_FILES = 256 + SIDE_PORT_CONNECTIONS
LOG_EVERY = 60.0
_REFUSED_BODY = b"too many connections in flight; retry shortly\n"
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_REFUSED_BODY), _REFUSED_BODY)
)


def file_bound(limit: int) -> int:
    """`limit`, lowered so that the connections fit in the process's file limit beside the rest
    (half of what is left after the process's own files: the other half is its peers')."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limit
    return max(1, min(limit, (soft - RESERVED_FILES - BACKLOG) // 2))


def raise_file_limit() -> None:
    """Raise the process's soft limit on open files to its hard limit, as Go programs do: the
    soft limit of 1024 that many systems set is there for select(), which neither asyncio (epoll)
    nor libtorrent uses."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = _kernel_file_ceiling()
    wanted = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as e:
            log.debug("open-file limit left as it was", extra={"limit": soft, "error": str(e)})


def _kernel_file_ceiling() -> int:
    """The most files one process may be allowed (fs.nr_open)."""
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        return 1 << 20


class Connections:
    """Which of a listener's connections are in the middle of a request, and since when the others
    have been idle; the middleware to install on the app says so."""

    def __init__(self, limit: int, on_shed: Callable[[str], None] | None = None) -> None:
        self.limit = file_bound(limit)
        self._on_shed = on_shed
        self._busy: dict[RequestHandler, int] = {}
        self._idle_since: dict[RequestHandler, float] = {}
        self._shed = logs.Throttle(LOG_EVERY)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], object]
    ) -> web.StreamResponse:
        protocol = request.protocol
        self._busy[protocol] = self._busy.get(protocol, 0) + 1
        try:
            response = await handler(request)  # type: ignore[misc]
            assert isinstance(response, web.StreamResponse)
            return response
        finally:
            left = self._busy.pop(protocol) - 1
            if left:
                self._busy[protocol] = left
            self._idle_since[protocol] = time.monotonic()

    def factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        """The protocol factory of a listener of `server`: a new connection, within the limit."""

        def accept() -> asyncio.Protocol:
            open_ = [h for h in server.connections if h.transport is not None]
            if len(open_) >= self.limit and not self._close_idlest(open_):
                self._shedding("all_busy")
                return _Refused()
            handler = server()
            self._idle_since[handler] = time.monotonic()
            if len(self._idle_since) > 2 * self.limit + BACKLOG:
                live = set(server.connections)
                self._idle_since = {h: t for h, t in self._idle_since.items() if h in live}
            return handler

        return accept

    def _close_idlest(self, open_: list[RequestHandler]) -> bool:
        idle = [h for h in open_ if h not in self._busy]
        if not idle:
            return False
        idlest = min(idle, key=lambda h: self._idle_since.get(h, 0.0))
        self._idle_since.pop(idlest, None)
        idlest.force_close()
        self._shedding("idle")
        return True

    def _shedding(self, reason: str) -> None:
        if self._on_shed is not None:
            self._on_shed(reason)
        if shed := self._shed.due():
            log.warning(
                "client connections at their limit",
                extra={
                    "limit": self.limit,
                    "shed": shed,
                    "how": "the connection idle longest is closed for a new one; with every"
                    " one in a request, a new one is answered 503",
                },
            )


class _Refused(asyncio.Protocol):
    """A connection over the limit: told so, and closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(REFUSAL)
        transport.close()


class Listener(web.BaseSite):
    """`runner`'s app on host:port, its connections bounded by `connections`."""

    __slots__ = ("_connections", "_host", "_port")

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, connections: Connections
    ) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self._host, self._port = host, port
        self._connections = connections

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port (the one asked for, until started)."""
        sockets = getattr(self._server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._connections.factory(server),
            self._host,
            self._port,
            backlog=BACKLOG,
            reuse_address=True,
        )


async def start(
    app: web.Application, host: str, port: int, connections: Connections, **kwargs: object
) -> tuple[web.AppRunner, Listener]:
    """Serve `app` on host:port with `connections` bounding its clients; `kwargs` go to its
    runner. Raises OSError when the port cannot be bound (the runner cleaned up)."""
    app.middlewares.insert(0, connections.middleware)
    # Idle connections closed after IDLE_SECONDS: aiohttp's own default is an hour, and it is
    # also all the time a connection that never finishes its first request head is given.
    runner = web.AppRunner(app, keepalive_timeout=IDLE_SECONDS, **kwargs)  # type: ignore[arg-type]
    await runner.setup()
    listener = Listener(runner, host, port, connections)
    try:
        await listener.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, listener
