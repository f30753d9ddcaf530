"""The tracker's metrics (names are part of the contract, DESIGN section 6), one registry per
server so that several trackers can live in one process, and the interceptor that times RPCs."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from tracker.store import Store

BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.1,
    0.25,
    1.0,
)


class TrackerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        gauges = {
            "nodes": "nodes in the cluster",
            "leases": "leases held on cold chunks",
            "blobs": "blobs the tracker knows of",
            "preheat_tasks": "preheat jobs kept",
        }
        self.gauges = {
            name: Gauge(f"distributed_images_tracker_{name}", doc, registry=self.registry)
            for name, doc in gauges.items()
        }
        self.replicas = Gauge(
            "distributed_images_tracker_replicas",
            "tracker replicas serving the cluster (1 without a shared store)",
            registry=self.registry,
        )
        self.store_up = Gauge(
            "distributed_images_tracker_store_up",
            "1 while the tracker's store answers",
            registry=self.registry,
        )
        self.rpc_duration = Histogram(
            "distributed_images_tracker_rpc_duration_seconds",
            "time to answer a unary RPC",
            ["method"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.rpc_errors = Counter(
            "distributed_images_tracker_rpc_errors_total",
            "RPCs answered with an error status",
            ["method", "code"],
            registry=self.registry,
        )

    async def refresh(self, store: Store) -> None:
        """Read the cluster-wide figures from the store (every second or so, not per scrape:
        with a shared store each is a round trip)."""
        figures = {
            "nodes": await store.members.count(),
            "leases": await store.leases.total(),
            "blobs": await store.blobs.count(),
            "preheat_tasks": await store.tasks.count(),
        }
        for name, value in figures.items():
            self.gauges[name].set(value)
        self.replicas.set(len(await store.replicas.live()))

    def count_error(self, method: str, code: grpc.StatusCode) -> None:
        self.rpc_errors.labels(method, code.name).inc()


class TimingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Observes `rpc_duration_seconds{method}` for every unary RPC of the service (streams live
    for minutes and would only blur the histogram). A method's timed handler is made once."""

    def __init__(self, metrics: TrackerMetrics, service_prefix: str) -> None:
        self._metrics = metrics
        self._prefix = service_prefix
        self._timed: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = details.method
        timed = self._timed.get(method)
        if timed is not None:
            return timed
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None or not method.startswith(self._prefix):
            return handler
        timed = self._timed[method] = self._time(method.rpartition("/")[2], handler)
        return timed

    def _time(self, name: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        histogram = self._metrics.rpc_duration.labels(name)
        behavior = handler.unary_unary

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            try:
                return await behavior(request, context)
            finally:
                histogram.observe(time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
