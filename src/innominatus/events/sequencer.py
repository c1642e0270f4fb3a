"""Stream positions, given after commit, and the publication that follows.

Why: PostgreSQL hands out serial numbers at insert, not at commit. If writers numbered their own events,
a transaction could commit event 5 after another one committed 6, and a client resuming "after 6" would
never see 5. Holding one lock from insert to commit closes that hole but runs every state-changing
transaction of the whole system one at a time. So writers insert events without a position and commit
concurrently; afterwards one pass at a time (a PostgreSQL advisory lock across processes, the write lock
on SQLite) numbers the committed, unnumbered events in insert order, gap-free. Only committed events get
positions, and every lower position was given by an earlier, committed pass: once a reader sees N, all
of 1..N are readable. Passes coalesce under load (one pass numbers what many writers committed).

A pass also loads each event's resource once (the snapshot every subscriber shares), releases the
resources parked behind one that became ACTIVE (lifecycle.release_dependents), and publishes to the hub
in order, including positions another process gave since this one last published.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text, update

from innominatus import lifecycle
from innominatus.db.models import Event, Resource
from innominatus.events.types import StateEvent
from innominatus.states import ResourceState

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from innominatus.events.hub import EventHub

log = logging.getLogger(__name__)

BATCH = 1000  # events numbered per statement
BACKLOG_LIMIT = 10_000  # beyond this many positions published elsewhere, subscribers catch up by replay
RETRY_SECONDS = 1.0
_LOCK_KEY = 0x1EE7_0002

_events = Event.__table__
_unnumbered = (
    select(_events.c.id, func.row_number().over(order_by=_events.c.id).label("rn"))
    .where(_events.c.sequence.is_(None))
    .order_by(_events.c.id)
    .limit(BATCH)
    .subquery()
)
_NUMBER = (
    update(_events)
    .where(_events.c.id == _unnumbered.c.id)
    .values(
        sequence=select(func.coalesce(func.max(_events.c.sequence), 0)).scalar_subquery() + _unnumbered.c.rn
    )
    .returning(*_events.c)
)


class Sequencer:
    def __init__(self, sessions: async_sessionmaker[Any], hub: EventHub, dialect: str) -> None:
        self._sessions = sessions
        self.hub = hub
        self._postgres = dialect == "postgresql"
        self._requested = 0  # flush calls so far
        self._completed = 0  # every flush call up to this one is covered by a finished pass
        self._running: asyncio.Future[None] | None = None
        self._retry: asyncio.TimerHandle | None = None

    async def high_water(self) -> int:
        """The highest position published in this process (read from the table the first time)."""
        if self.hub.published is None:
            async with self._sessions() as session:
                top = await session.scalar(select(func.max(Event.sequence)))
            if self.hub.published is None:
                self.hub.published = int(top or 0)
        return self.hub.published

    async def flush(self) -> None:
        """Number and publish every event committed before this call; returns once that is done."""
        self._requested += 1
        ticket = self._requested
        while self._completed < ticket:
            if self._running is None:
                self._running = asyncio.ensure_future(self._run())
            running = self._running
            # Shielded: a cancelled writer must not cancel a pass that others wait for.
            await asyncio.shield(running)
            if running.exception() is not None:
                return  # logged, and retried shortly; the writer's own transaction has committed

    async def _run(self) -> None:
        start = self._requested
        try:
            await self._pass()
        except Exception as exc:
            log.exception("numbering committed events failed; trying again in %ss", RETRY_SECONDS)
            self._schedule_retry()
            raise exc from None
        else:
            self._completed = max(self._completed, start)
        finally:
            self._running = None

    def _schedule_retry(self) -> None:
        if self._retry is None:
            loop = asyncio.get_running_loop()
            self._retry = loop.call_later(RETRY_SECONDS, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        task = asyncio.ensure_future(self.flush())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    async def _pass(self) -> None:
        while True:
            async with self._sessions() as session, session.begin():
                if self._postgres:
                    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
                numbered = sorted((await session.execute(_NUMBER)).all(), key=lambda r: r.sequence)
                if numbered:
                    base = numbered[0].sequence - 1
                else:
                    base = int(await session.scalar(select(func.max(Event.sequence))) or 0)
                if self.hub.published is None:
                    self.hub.published = base  # this process starts publishing after what existed
                backlog = await self._backlog(session, base)
                snapshots = await _snapshots(session, [*backlog, *numbered])
                await lifecycle.release_dependents(
                    session,
                    [
                        (res.application_id, res.name)
                        for row in numbered
                        if row.to_state == ResourceState.ACTIVE
                        and (res := snapshots.get(row.resource_id)) is not None
                    ],
                )
            self.hub.publish(
                StateEvent.from_row(row, snapshots.get(row.resource_id)) for row in [*backlog, *numbered]
            )
            if len(numbered) < BATCH:
                return

    async def _backlog(self, session: AsyncSession, base: int) -> list[Any]:
        """Positions up to `base` that another process gave and this one has not published yet."""
        published = self.hub.published
        assert published is not None
        if base <= published:
            return []
        if base - published > BACKLOG_LIMIT:
            # Too much to hand out live: every subscriber is ended and resumes by replay.
            self.hub.overflow_all()
            self.hub.published = base
            return []
        rows = await session.execute(
            select(_events)
            .where(_events.c.sequence > published, _events.c.sequence <= base)
            .order_by(_events.c.sequence)
        )
        return list(rows.all())


async def _snapshots(session: AsyncSession, rows: list[Any]) -> dict[str, Resource]:
    ids = {row.resource_id for row in rows}
    if not ids:
        return {}
    found = await session.scalars(select(Resource).where(Resource.id.in_(ids)))
    return {r.id: r for r in found}
