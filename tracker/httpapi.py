"""The tracker's HTTP port: `/metrics` (Prometheus text), `/healthz` and `/readyz`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from distributed_images import listener
from tracker import address


def build(
    registry: CollectorRegistry,
    healthy: Callable[[], bool],
    ready: Callable[[], Awaitable[bool]],
    refresh: Callable[[], Awaitable[None]],
) -> web.Application:
    """`/healthz`: the process serves (liveness); `/readyz`: and its store answers (readiness);
    `refresh` brings the registry's gauges up to date before each scrape."""

    async def metrics(request: web.Request) -> web.Response:
        await refresh()
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        if healthy():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="shutting down\n")

    async def readyz(request: web.Request) -> web.Response:
        if await ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not ready: stopping, or the store is unreachable\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(app: web.Application, listen: str) -> tuple[web.AppRunner, int]:
    """Start `app` on `listen`; returns its runner (to clean up) and the bound port."""
    host, port = address.split(listen)
    # Prometheus, the kubelet's probes and the status command: a few at a time.
    connections = listener.Connections(listener.SIDE_PORT_CONNECTIONS)
    runner, site = await listener.start(app, host, port, connections, access_log=None)
    return runner, site.port
