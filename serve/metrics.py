"""Prometheus metrics of one gateway replica, in a registry of its own.

A private registry (not prometheus_client's global one) keeps Ray's own exporters and a
second app in the same process from colliding, and lets tests build as many as they like.
Route labels use the route template ("/v1/memories/{name}/observe"), never the raw path, so
a client cannot blow up the label cardinality by inventing names.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SURPRISE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


class GatewayMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "nmem_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nmem_http_request_seconds",
            "HTTP request latency by route template.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tool_calls = Counter(
            "nmem_mcp_tool_calls_total",
            "MCP tool calls by tool and outcome (ok / error).",
            ["tool", "outcome"],
            registry=self.registry,
        )
        self.live_actors = Gauge(
            "nmem_live_actors",
            "Memory actors currently alive (as seen by this gateway at scrape time).",
            registry=self.registry,
        )
        self.surprise = Histogram(
            "nmem_observe_surprise",
            "Surprise of observed contexts (0 = known, 1 = novel).",
            buckets=SURPRISE_BUCKETS,
            registry=self.registry,
        )
        self.encode_seconds = Histogram(
            "nmem_encode_seconds",
            "Time the gateway waited for the Encoder deployment.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
