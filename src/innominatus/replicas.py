"""What crosses between replicas sharing one PostgreSQL database, in one place: other replicas' event
positions go to the sequencer (which reads the events from the table and publishes them here, so the
engine and every subscriber of this replica see them), their step events to the hub, and cancelled runs
to the engine, their provider reloads to this replica's catalog. What this replica sends: the numbering
function's NOTIFY (migration 0006), the step relay (events/relay.py), the cancel NOTIFY
(executions.cancel_execution) and `announce_reload`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import func, select

from innominatus.db.database import asyncpg_dsn
from innominatus.engine import Engine
from innominatus.events import listen, relay
from innominatus.store import Store

log = logging.getLogger(__name__)


def listener(store: Store, engine: Engine, reload: Callable[[], Awaitable[object]]) -> listen.Listener | None:
    """The replica's LISTEN connection (PostgreSQL); None for the embedded SQLite database. `reload`
    reloads this replica's provider catalog (another replica's reloadProviders succeeded)."""
    if store.dialect != "postgresql":
        return None
    reloads: set[asyncio.Task[object]] = set()  # kept until done (the loop holds tasks weakly)

    async def reload_here() -> None:
        try:
            await reload()
        except Exception as exc:
            log.warning("reloading providers as another replica did failed; the catalog stays: %s", exc)

    def on_reload(origin: str) -> None:
        if origin != store.replica:
            task = asyncio.ensure_future(reload_here())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

    def on_events(payload: str) -> None:
        origin, _, top = payload.rpartition(" ")
        store.sequencer.announced(origin, int(top))

    def on_steps(payload: str) -> None:
        origin, events = relay.unpack(payload)
        if origin != store.replica:
            for event in events:
                store.hub.publish_step(event)

    found = listen.Listener(
        asyncpg_dsn(store.engine.url),
        store.replica,
        {
            listen.EVENTS: on_events,
            listen.STEPS: on_steps,
            listen.CANCEL: engine.cancel_run,
            listen.RELOAD: on_reload,
        },
        on_connect=store.sequencer.resync,
    )
    store.relay_steps_while(found.has_peers)  # a lone replica sends its step events to no one
    return found


async def announce_reload(store: Store) -> None:
    """This replica reloaded its providers: the others do too (PostgreSQL; a reload is per process)."""
    if store.dialect == "postgresql":
        async with store.engine.connect() as conn:
            await conn.execute(select(func.pg_notify(listen.RELOAD, store.replica)))
            await conn.commit()
