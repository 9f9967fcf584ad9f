"""Prometheus: request latency by route, answers by tier, queue depth, jobs, the embedder, the
pool. GET /metrics needs no key; it can be turned off or served on a port of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator

import asyncpg
from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.plugins.prometheus import PrometheusConfig
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from app.auth import runtime_of
from knowledge.learning.metrics import queue_depth
from knowledge.learning.review import STATUSES as QUEUE_STATUSES
from knowledge.runtime import Runtime

log = logging.getLogger(__name__)

ANSWERS = Counter("learnkb_answers", "Answers given, by tier", ["tier"])
QUEUE_ITEMS = Gauge("learnkb_queue_items", "Learning queue items, by status", ["status"])
# Embedding batches hold at most 32 texts by default.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
# Queue depth is a count over the table: read at most this often.
QUEUE_DEPTH_SECONDS = 10.0


def prometheus_config() -> PrometheusConfig:
    """Request latency histograms, labelled by route template (not by raw path)."""
    return PrometheusConfig(app_name="learnkb", prefix="learnkb", group_path=True,
                            # Anchored: "/metrics" alone would also leave out /v1/metrics/...
                            exclude=["^/metrics$", "^/health$", "^/ready$"])


class RuntimeCollector(Collector):
    """The serving runtime's own state, read at scrape time."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None

    def collect(self) -> Iterator[Metric]:
        rt = self.runtime
        if rt is None:
            return
        sizes = rt.embedder.stats.sizes
        buckets = []
        for bound in BATCH_BUCKETS:
            buckets.append((str(bound), float(sum(n for s, n in sizes.items() if s <= bound))))
        buckets.append(("+Inf", float(sum(sizes.values()))))
        batch = HistogramMetricFamily("learnkb_embedding_batch_size",
                                      "Texts per forward pass of the embedding model",
                                      buckets=buckets,
                                      sum_value=float(sum(s * n for s, n in sizes.items())))
        yield batch
        pool = GaugeMetricFamily("learnkb_pool_connections",
                                 "Database pool connections, by state", labels=["state"])
        size, idle = rt.pool.get_size(), rt.pool.get_idle_size()
        pool.add_metric(["open"], size)
        pool.add_metric(["idle"], idle)
        pool.add_metric(["in_use"], size - idle)
        pool.add_metric(["max"], rt.pool.get_max_size())
        yield pool
        cache = GaugeMetricFamily("learnkb_embedding_requests",
                                  "Question embeddings asked for, and served from the cache",
                                  labels=["served"])
        cache.add_metric(["model"], rt.embedder.stats.requests - rt.embedder.stats.cache_hits
                         - rt.embedder.stats.shed)
        cache.add_metric(["cache"], rt.embedder.stats.cache_hits)
        cache.add_metric(["shed"], rt.embedder.stats.shed)
        yield cache


RUNTIME = RuntimeCollector()
REGISTRY.register(RUNTIME)


async def refresh_queue_depth(rt: Runtime) -> None:
    depth = await queue_depth(rt.pool)
    # Every status, so one that empties shows 0 rather than its last count.
    for status in QUEUE_STATUSES:
        QUEUE_ITEMS.labels(status=status).set(depth.get(status, 0))


async def metrics_port_hook(rt: Runtime) -> Callable[[], Awaitable[None]]:
    """With Prometheus on a port of its own nothing here serves a scrape, so the queue depth
    is refreshed in the background instead."""
    RUNTIME.runtime = rt

    async def refresh() -> None:
        while True:
            try:
                await refresh_queue_depth(rt)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.warning("could not read the queue depth for Prometheus; trying again")
            await asyncio.sleep(QUEUE_DEPTH_SECONDS)

    task = asyncio.create_task(refresh(), name="prometheus-queue-depth")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop


class MetricsController(Controller):
    path = "/metrics"
    tags = ("health",)
    include_in_schema = False
    _read = 0.0

    @get("/", summary="Prometheus metrics (no key)", media_type=CONTENT_TYPE_LATEST)
    async def metrics(self, state: State) -> Response[bytes]:
        rt = runtime_of(state)
        RUNTIME.runtime = rt
        now = time.monotonic()
        if now - MetricsController._read > QUEUE_DEPTH_SECONDS:
            MetricsController._read = now
            await refresh_queue_depth(rt)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
