"""The node binary's composition root: build every part in order, serve, stop cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from aiohttp import web

from node.blobs import Blobs
from node.config import Config, split_host_port
from node.downloads import Downloads
from node.manifests import Manifests
from node.metrics import NodeMetrics
from node.oci.routes import RegistryAPI
from node.store.contentstore import ContentStore
from node.upstream.auth import Authenticator, Credentials
from node.upstream.client import UpstreamClient
from node.upstream.registries import Registries

__all__ = ["HELP", "Config", "main", "run"]

HELP = "run a node agent: this host's registry mirror, fed by peers and upstreams"
SHUTDOWN_GRACE = 10.0

log = logging.getLogger("node")


def main(config: Config) -> int:
    asyncio.run(run(config))
    return 0


async def run(config: Config, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT arrives)."""
    stop = stop or _stop_on_signals()
    metrics = NodeMetrics()
    store = ContentStore.open(
        config.store.data_dir,
        max_bytes=config.store.cache_max_bytes,
        low_watermark=config.store.cache_low_watermark,
        on_evict=lambda info: metrics.evictions.inc(),
    )
    metrics.store_bytes.set_function(store.usage)
    registries = Registries(config.upstream.registry, config.upstream.default_registry)
    credentials = Credentials.load(Path(config.upstream.auth_file))
    downloads = Downloads(store)
    upstream = UpstreamClient(
        Authenticator(credentials),
        metrics,
        timeout=config.upstream.upstream_timeout,
        retries=config.upstream.upstream_retries,
    )
    ready = False
    async with upstream:
        api = RegistryAPI(
            registries,
            Manifests(store, upstream, metrics),
            Blobs(store, downloads, upstream, metrics),
            metrics,
            ready=lambda: ready,
        )
        runner = web.AppRunner(
            api.application(), handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE
        )
        await runner.setup()
        host, port = split_host_port(config.listen)
        try:
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
            ready = True
            log.info(
                "node ready",
                extra={
                    "listen": config.listen,
                    "data_dir": str(config.store.data_dir),
                    "blobs": len(store.blobs()),
                    "default_registry": registries.default_ns,
                },
            )
            await stop.wait()
            log.info("node stopping")
        finally:
            ready = False
            await runner.cleanup()
            await downloads.close()
            store.close()
            log.info("node stopped")


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
