"""Prometheus metrics: uploads, jobs by status, request latency; one registry per app."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    """The API's metrics, on their own registry so several apps (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.uploads = Counter(
            "spotshift_uploads_total", "Uploads accepted and queued as jobs.", registry=self.registry
        )
        self.rejected = Counter(
            "spotshift_uploads_rejected_total",
            "Uploads refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.jobs = Gauge(
            "spotshift_jobs",
            "Jobs queued or processing now (from one listing page: saturates at 1,000).",
            ["status"],
            registry=self.registry,
        )
        self.storage_up = Gauge(
            "spotshift_storage_up", "1 if the last scrape could read the store.", registry=self.registry
        )
        self.latency = Histogram(
            "spotshift_request_duration_seconds",
            "HTTP request latency, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )


class LatencyMiddleware:
    """Times every HTTP request; labels by route template so ids do not explode cardinality."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.latency.labels(scope["method"], route, str(status)).observe(time.perf_counter() - start)
