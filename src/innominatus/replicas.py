"""What crosses between replicas sharing one PostgreSQL database, in one place: other replicas' event
positions go to the sequencer (which reads the events from the table and publishes them here, so the
engine and every subscriber of this replica see them), their step events to the hub, and cancelled runs
to the engine. What this replica sends: the numbering function's NOTIFY (migration 0006), the step relay
(events/relay.py) and the cancel NOTIFY (executions.cancel_execution)."""

from __future__ import annotations

from innominatus.db.database import asyncpg_dsn
from innominatus.engine import Engine
from innominatus.events import listen, relay
from innominatus.store import Store


def listener(store: Store, engine: Engine) -> listen.Listener | None:
    """The replica's LISTEN connection (PostgreSQL); None for the embedded SQLite database."""
    if store.dialect != "postgresql":
        return None

    def on_events(payload: str) -> None:
        origin, _, top = payload.rpartition(" ")
        store.sequencer.announced(origin, int(top))

    def on_steps(payload: str) -> None:
        origin, events = relay.unpack(payload)
        if origin != store.replica:
            for event in events:
                store.hub.publish_step(event)

    return listen.Listener(
        asyncpg_dsn(store.engine.url),
        {listen.EVENTS: on_events, listen.STEPS: on_steps, listen.CANCEL: engine.cancel_run},
        on_connect=store.sequencer.resync,
    )
