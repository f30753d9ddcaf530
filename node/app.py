"""The node binary's composition root: build every part in order, serve, stop cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
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

__all__ = ["HELP", "Config", "Node", "compose", "main", "run"]

HELP = "run a node agent: this host's registry mirror, fed by peers and upstreams"
SHUTDOWN_GRACE = 10.0

log = logging.getLogger("node")


@dataclass
class Node:
    """The parts of a running node that its servers and tests reach."""

    config: Config
    app: web.Application
    store: ContentStore
    metrics: NodeMetrics
    registries: Registries
    ready: bool = False


def main(config: Config) -> int:
    asyncio.run(run(config))
    return 0


@asynccontextmanager
async def compose(config: Config) -> AsyncIterator[Node]:
    """Build the node's parts in dependency order; close them in reverse."""
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
    try:
        async with upstream:
            node: Node
            api = RegistryAPI(
                registries,
                Manifests(store, upstream, metrics),
                Blobs(store, downloads, upstream, metrics),
                metrics,
                ready=lambda: node.ready,
            )
            node = Node(config, api.application(), store, metrics, registries)
            try:
                yield node
            finally:
                node.ready = False
                await downloads.close()
    finally:
        store.close()


async def run(config: Config, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT arrives)."""
    stop = stop or _stop_on_signals()
    async with compose(config) as node:
        runner = web.AppRunner(node.app, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE)
        await runner.setup()
        try:
            host, port = split_host_port(config.listen)
            await web.TCPSite(runner, host, port, reuse_address=True).start()
            node.ready = True
            log.info(
                "node ready",
                extra={
                    "listen": config.listen,
                    "data_dir": str(config.store.data_dir),
                    "blobs": len(node.store.blobs()),
                    "default_registry": node.registries.default_ns,
                },
            )
            await stop.wait()
            log.info("node stopping")
        finally:
            node.ready = False
            await runner.cleanup()
    log.info("node stopped")


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
