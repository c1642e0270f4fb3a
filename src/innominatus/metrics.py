"""Prometheus metrics of one server process, served at `GET /metrics` (no token: no team or application
names in any label). Resource counts are the whole database's, read at each scrape; the rest is this
process's own work."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select

from innominatus.db.models import Resource
from innominatus.events import StateEvent
from innominatus.states import ResourceState

if TYPE_CHECKING:
    from innominatus.engine import Engine
    from innominatus.store import Store

_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.resources = Gauge(
            "innominatus_resources",
            "Resources by state, in the whole database.",
            ["state"],
            registry=registry,
        )
        self.runs = Counter(
            "innominatus_workflow_runs",
            "Workflow runs this process finished, by operation and final status.",
            ["operation", "status"],
            registry=registry,
        )
        self.run_seconds = Histogram(
            "innominatus_workflow_duration_seconds",
            "How long this process's workflow runs took, by operation.",
            ["operation"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.step_seconds = Histogram(
            "innominatus_step_duration_seconds",
            "How long this process's step attempts took, by step type.",
            ["type"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.subscriptions = Gauge(
            "innominatus_subscriptions", "Live subscriptions on this process.", registry=registry
        )
        self.events = Counter(
            "innominatus_events", "State-change events this process published.", registry=registry
        )
        self.engine_running = Gauge(
            "innominatus_engine_running", "Workflow runs this process's engine runs now.", registry=registry
        )
        self.claim_lag = Histogram(
            "innominatus_claim_lag_seconds",
            "From a resource becoming REQUESTED to its run being claimed.",
            buckets=_SECONDS,
            registry=registry,
        )

    def on_event(self, event: StateEvent) -> None:
        self.events.inc()

    async def render(self, store: Store, engine: Engine | None) -> bytes:
        counts = dict(await store.rows(select(Resource.state, func.count()).group_by(Resource.state)))
        for state in ResourceState:
            self.resources.labels(state=state.value).set(counts.get(state.value, 0))
        self.subscriptions.set(store.hub.subscriber_count)
        self.engine_running.set(engine.running_count if engine is not None else 0)
        return generate_latest(self.registry)
