"""Durable resource events and their in-process fan-out.

Rows in `events` are the truth (written by lifecycle.transition); the hub only carries committed
events to subscribers in this process. A subscriber that asks for `after_sequence` first replays the
stored rows, then streams live, so a reconnecting client loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from innominatus.db.models import Event

if TYPE_CHECKING:
    from innominatus.store import Store

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
REPLAY_BATCH = 500


@dataclass(frozen=True)
class StateEvent:
    sequence: int
    resource_id: str
    application_name: str
    team: str | None
    from_state: str | None
    to_state: str
    reason: str | None
    at: datetime

    @classmethod
    def from_row(cls, row: Event) -> StateEvent:
        return cls(
            sequence=row.sequence,
            resource_id=row.resource_id,
            application_name=row.application_name,
            team=row.team,
            from_state=row.from_state,
            to_state=row.to_state,
            reason=row.reason,
            at=row.at,
        )


@dataclass(frozen=True)
class EventFilter:
    application: str | None = None
    resource_id: str | None = None
    team: str | None = None  # None: every team's events (admins)

    def matches(self, event: StateEvent) -> bool:
        if self.team is not None and event.team != self.team:
            return False
        if self.application is not None and event.application_name != self.application:
            return False
        return self.resource_id is None or event.resource_id == self.resource_id


class _Subscriber:
    def __init__(self, flt: EventFilter) -> None:
        self.filter = flt
        self.queue: asyncio.Queue[StateEvent] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.overflowed = False


@dataclass(frozen=True)
class StepEvent:
    """A step's status change or one of its log lines; live only (the step rows hold the record)."""

    workflow_id: str
    application_name: str
    team: str | None
    step_name: str
    status: str
    attempts: int
    log_line: str | None
    at: datetime


@dataclass(frozen=True)
class StepFilter:
    workflow_id: str | None = None
    application: str | None = None
    team: str | None = None  # None: every team's steps (admins)

    def matches(self, event: StepEvent) -> bool:
        if self.team is not None and event.team != self.team:
            return False
        if self.workflow_id is not None and event.workflow_id != self.workflow_id:
            return False
        return self.application is None or event.application_name == self.application


class EventHub:
    def __init__(self) -> None:
        self._subscribers: set[_Subscriber] = set()
        self._listeners: list[Callable[[StateEvent], None]] = []
        self._step_subscribers: set[tuple[StepFilter, asyncio.Queue[StepEvent]]] = set()

    def publish_step(self, event: StepEvent) -> None:
        for flt, queue in self._step_subscribers:
            if flt.matches(event):
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:
                    log.warning(
                        "a step subscriber is too slow; a step event for %s was dropped", event.workflow_id
                    )

    async def steps(self, flt: StepFilter) -> AsyncIterator[StepEvent]:
        """Step events as they happen (no replay: the stored steps and logs are the history)."""
        entry = (flt, asyncio.Queue[StepEvent](maxsize=QUEUE_SIZE))
        self._step_subscribers.add(entry)
        try:
            while True:
                yield await entry[1].get()
        finally:
            self._step_subscribers.discard(entry)

    def add_listener(self, listener: Callable[[StateEvent], None]) -> None:
        """A synchronous callback for every committed event (the engine's wake-up)."""
        self._listeners.append(listener)

    def publish(self, events: Iterable[StateEvent]) -> None:
        for event in events:
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("event listener failed")
            for sub in self._subscribers:
                if not sub.filter.matches(event):
                    continue
                try:
                    sub.queue.put_nowait(event)
                except asyncio.QueueFull:
                    # A slow client must not hold memory or block the engine: it catches up from the table.
                    sub.overflowed = True

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @contextlib.contextmanager
    def _subscribe(self, flt: EventFilter) -> Iterable[_Subscriber]:
        sub = _Subscriber(flt)
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)


async def load_events(
    store: Store, flt: EventFilter, after: int, limit: int = REPLAY_BATCH
) -> list[StateEvent]:
    query = select(Event).where(Event.sequence > after).order_by(Event.sequence).limit(limit)
    if flt.application is not None:
        query = query.where(Event.application_name == flt.application)
    if flt.resource_id is not None:
        query = query.where(Event.resource_id == flt.resource_id)
    if flt.team is not None:
        query = query.where(Event.team == flt.team)
    async with store.session() as session:
        rows = (await session.scalars(query)).all()
    return [StateEvent.from_row(row) for row in rows]


async def stream(
    store: Store, flt: EventFilter, after_sequence: int | None = None
) -> AsyncIterator[StateEvent]:
    """Replay stored events after `after_sequence` (if given), then stream live ones."""
    with store.hub._subscribe(flt) as sub:  # subscribe before replaying so nothing falls in between
        delivered: set[int] = set()
        cursor = after_sequence
        if cursor is not None:
            async for event in _replay(store, flt, cursor, delivered):
                cursor = event.sequence
                yield event
        while True:
            if sub.overflowed:
                sub.overflowed = False
                while not sub.queue.empty():
                    sub.queue.get_nowait()
                start = cursor if cursor is not None else 0
                async for event in _replay(store, flt, start, delivered):
                    cursor = event.sequence
                    yield event
                continue
            event = await sub.queue.get()
            if event.sequence in delivered:
                continue
            delivered.add(event.sequence)
            if len(delivered) > 4 * QUEUE_SIZE:
                delivered = {s for s in delivered if s > event.sequence - QUEUE_SIZE}
            cursor = max(cursor or 0, event.sequence)
            yield event


async def _replay(
    store: Store, flt: EventFilter, after: int, delivered: set[int]
) -> AsyncIterator[StateEvent]:
    while True:
        batch = await load_events(store, flt, after)
        for event in batch:
            after = event.sequence
            if event.sequence in delivered:
                continue
            delivered.add(event.sequence)
            yield event
        if len(batch) < REPLAY_BATCH:
            return
