"""Prometheus metrics of one service instance (its own registry, so test apps never collide).

What it knows: request latency per route template, events ingested (and how many arrived
late), accounts known and flagged, model identity and readiness, and how to render them
in the Prometheus text format.

What it does not know: HTTP routing (the middleware passes the route template in).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class ServiceMetrics:
    """The metrics of one app instance."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_seconds = Histogram(
            "distillwatch_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.events_ingested = Counter(
            "distillwatch_events_ingested",
            "events accepted and stored by POST /v1/events",
            registry=r,
        )
        self.late_events = Counter(
            "distillwatch_late_events",
            "ingested events older than their account's last event (processed in arrival order)",
            registry=r,
        )
        self.events_scored = Counter(
            "distillwatch_events_scored", "events scored statelessly by POST /v1/score", registry=r
        )
        self.accounts = Gauge("distillwatch_accounts", "accounts in the state store", registry=r)
        self.accounts_flagged = Gauge(
            "distillwatch_accounts_flagged",
            "stored accounts whose current score is flagged",
            registry=r,
        )
        self.flag_transitions = Counter(
            "distillwatch_accounts_newly_flagged",
            "accounts that went from not flagged (or unseen) to flagged",
            registry=r,
        )
        self.model_info = Info("distillwatch_model", "the loaded model", registry=r)
        self.model_ready = Gauge(
            "distillwatch_model_ready", "1 once the model is loaded and serving", registry=r
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.request_seconds.labels(method, route, str(status)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
