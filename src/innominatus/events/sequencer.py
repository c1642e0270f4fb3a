"""Stream positions, and publication in their order.

Why: PostgreSQL hands out serial numbers at insert, not at commit. If writers numbered their own events,
a transaction could commit event 5 after another one committed 6, and a client resuming "after 6" would
never see 5. Holding one lock from insert to commit closes that hole but runs every state-changing
transaction of the whole system one at a time. So on PostgreSQL writers insert events without a position
and commit concurrently; afterwards one pass at a time (an advisory lock across processes) numbers the
committed, unnumbered events in insert order, gap-free. Only committed events get positions, and every
lower position was given by an earlier, committed pass: once a reader sees N, all of 1..N are readable.
Passes coalesce under load (one pass numbers what many writers committed).

SQLite already runs writing transactions one at a time (the write lock is taken at BEGIN), so there the
writer numbers its own events just before it commits: commit order is numbering order, with no extra
transaction.

Numbering also releases the resources parked behind one that became ACTIVE (lifecycle.release_dependents
on SQLite, the same UPDATE inside the PostgreSQL function of migration 0004), and says which events did
(migration 0008): only those wake the engine for a claim pass.

The sequencer publishes to the hub strictly in position order, reading from the table any position it
has not seen (given by another process, or by a writer that was cancelled after committing). Each event
carries its resource: the writer's own row when there is one, else one query for the batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, bindparam, column, func, select, text

from innominatus import lifecycle
from innominatus.db import direct
from innominatus.db.models import Event, Resource
from innominatus.events.stream import Rows, read_events
from innominatus.events.types import EventFilter, StateEvent
from innominatus.states import ResourceState

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

    from innominatus.events.hub import EventHub

log = logging.getLogger(__name__)

BATCH = 1000  # events numbered per statement, or read per query when catching up
BACKLOG_LIMIT = 10_000  # beyond this many positions published elsewhere, subscribers catch up by replay
RETRY_SECONDS = 1.0

_events = Event.__table__
# Migration 0004 defines the function (one round trip: lock, number, release parked resources).
# Migration 0006 makes it announce the highest position it gave (NOTIFY innominatus_events, with origin),
# 0008 tell which events released parked resources.
_NUMBER = text("SELECT (event).*, released FROM innominatus_number_events(:batch, :origin)").columns(
    *_events.c, column("released", Boolean)
)

_TOP = select(func.max(Event.sequence).label("top"))
_RESOURCES_BY_ID = select(*Resource.__table__.c).where(Resource.id.in_(bindparam("ids", expanding=True)))

Written = Sequence[tuple[Event, Resource]]  # what a transaction wrote (lifecycle.WROTE_EVENTS)


class Sequencer:
    def __init__(self, engine: AsyncEngine, rows: Rows, hub: EventHub, origin: str = "") -> None:
        self._engine = engine
        self.origin = origin
        self._rows_of = rows  # reads (Store.rows)
        self.hub = hub
        self.in_transaction = engine.dialect.name != "postgresql"  # SQLite: writers number their own events
        self._requested = 0  # flush calls so far
        self._completed = 0  # every flush call up to this one is covered by a finished pass
        self._running: asyncio.Future[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._order = asyncio.Lock()  # publication, one batch at a time
        self._rows: dict[int, Resource] = {}  # event id → the writer's resource row, until published
        self._top: int | None = None  # SQLite: the last position committed, when known
        self._numbered: int | None = None  # SQLite: the last position of the writer now committing
        self._announced = 0  # the highest position another replica announced (PostgreSQL)
        self._following: asyncio.Task[None] | None = None

    async def high_water(self) -> int:
        """The highest position published in this process (read from the table the first time)."""
        if self.hub.published is None:
            top = await self._top_position()
            if self.hub.published is None:
                self.hub.published = int(top or 0)
        return self.hub.published

    # ----------------------------------------------------------------------------- in the writer

    async def number(self, session: AsyncSession, written: Written) -> None:
        """SQLite: number the transaction's events before it commits (it holds the write lock). The
        embedded database serves one process, whose writers take turns: the last position committed
        is known here, and read from the table only when it is not (at start, after a rollback)."""
        top = self._top
        if top is None:
            with session.no_autoflush:  # numbered before they are inserted: no UPDATE afterwards
                top = int(await session.scalar(select(func.max(Event.sequence))) or 0)
        for position, (event, _) in enumerate(written, start=top + 1):
            event.sequence = position
        self._top = None  # unknown until `settle` hears how the transaction ended
        self._numbered = top + len(written)

    @staticmethod
    async def release(session: AsyncSession, written: Written) -> bool:
        """SQLite, after `number` and once the transaction's rows are written: what waited for a resource
        that became ACTIVE may now be claimed (on PostgreSQL the numbering function does this). Whether
        anything was released."""
        return await lifecycle.release_dependents(
            session, [(r.application_id, r.name) for e, r in written if e.to_state == ResourceState.ACTIVE]
        )

    def settle(self, committed: bool) -> None:
        """SQLite: the writer's transaction ended; committed, its last position is the new top."""
        if committed and self._numbered is not None:
            self._top = self._numbered
        self._numbered = None

    async def flush(self, written: Written, released: bool = True) -> None:
        """After a writing transaction committed: its events (and any before them) are numbered and
        published when this returns. SQLite: `released`, whether its ACTIVE events released anything."""
        if self.in_transaction:
            resources = {event.id: resource for event, resource in written}
            freed = {event.id for event, _ in written} if released else set()
            await self._publish([event for event, _ in written], resources, freed=freed)
            return
        for event, resource in written:
            self._rows[event.id] = resource
        self._requested += 1
        ticket = self._requested
        while self._completed < ticket:
            if self._running is None:
                self._running = asyncio.ensure_future(self._run())
            running = self._running
            # wait(), not await: a cancelled writer must not cancel a pass that others wait for, and a
            # failed pass (logged, retried shortly) is not the writer's error: its transaction committed.
            await asyncio.wait([running])
            if running.exception() is not None:
                return

    # ----------------------------------------------------------------------- PostgreSQL: a pass

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
            self._retry = asyncio.get_running_loop().call_later(RETRY_SECONDS, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        task = asyncio.ensure_future(self.flush(()))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        if self._following is None or self._following.done():
            self._following = asyncio.ensure_future(self._follow())

    def close(self) -> None:
        if self._following is not None:
            self._following.cancel()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    async def _pass(self) -> None:
        while True:
            numbered = await direct.autocommit_rows(
                self._engine, _NUMBER, {"batch": BATCH, "origin": self.origin}
            )
            resources = {row.id: self._rows.pop(row.id) for row in numbered if row.id in self._rows}
            foreign = {row.id for row in numbered if row.id not in resources}
            missing = {row.resource_id for row in numbered if row.id in foreign}
            if missing:  # numbered here, written by another process
                found = {r.id: r for r in await self._rows_of(_RESOURCES_BY_ID, {"ids": list(missing)})}
                resources.update(
                    {row.id: found[row.resource_id] for row in numbered if row.resource_id in found}
                )
            await self._publish(
                numbered, resources, foreign, freed={row.id for row in numbered if row.released}
            )
            if len(numbered) < BATCH:
                return

    # -------------------------------------------------------------------------------- publication

    async def _publish(
        self,
        rows: Sequence[Any],
        resources: dict[int, Resource],
        foreign: set[int] | None = None,
        *,
        freed: set[int],
    ) -> None:
        """Hand `rows` (numbered, in order) to the hub after every position before them. `freed`: the
        events that released resources parked behind theirs (the engine claims those)."""
        if not rows:
            return
        async with self._order:
            first = rows[0].sequence
            if self.hub.published is None:
                self.hub.published = first - 1  # this process starts publishing here
            published = self.hub.published
            if first > published + 1:
                if first - 1 - published > BACKLOG_LIMIT:
                    # Too much to hand out live: every subscriber is ended and resumes by replay.
                    self.hub.overflow_all()
                    self.hub.published = published = first - 1
                else:
                    await self._catch_up(published, first - 1)
                    published = first - 1
            fresh = [row for row in rows if row.sequence > published]
            self.hub.publish(
                StateEvent.from_row(
                    row,
                    resources.get(row.id),
                    foreign=row.id in (foreign or ()),
                    released=row.id in freed,
                )
                for row in fresh
            )

    async def _catch_up(self, after: int, upto: int) -> None:
        """Publish positions (after, upto] from the table, in pages."""
        while after < upto:
            events = await read_events(
                self._rows_of, EventFilter(), after, upto=upto, limit=BATCH, known=self._rows
            )
            if not events:
                log.error("events %d..%d are numbered but not readable; skipping them", after + 1, upto)
                self.hub.overflow_all()
                return
            own = {event.id for event in events if self._rows.pop(event.id, None) is not None}
            self.hub.publish(e if e.id in own else replace(e, foreign=True) for e in events)
            after = events[-1].sequence

    # ------------------------------------------------------------------ other replicas' positions

    def announced(self, origin: str, top: int) -> None:
        """Another replica numbered events up to `top` (a notification): publish them here too, read from
        the table. Announcements coalesce: one catch-up follows the highest announced so far."""
        if origin == self.origin or top <= self._announced:
            return
        self._announced = top
        if self._following is None or self._following.done():
            self._following = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        try:
            while self.hub.published is not None and self._announced > self.hub.published:
                async with self._order:
                    published = self.hub.published
                    if self._announced > published:
                        await self._catch_up(published, self._announced)
                        if self.hub.published == published:
                            return  # not readable (logged by _catch_up); subscribers resume by replay
        except Exception:
            log.exception("reading events other replicas numbered failed; trying again in %ss", RETRY_SECONDS)
            self._schedule_retry()

    async def resync(self) -> None:
        """After notifications may have been missed (the listening connection was lost): follow the
        table's highest position."""
        self.announced("", await self._top_position())

    async def _top_position(self) -> int:
        """The highest position in the table."""
        return int((await self._rows_of(_TOP, None))[0].top or 0)
