"""A subscription: the stored events after `after_sequence` (replay, in pages), then live ones from the
hub, with nothing lost or repeated in between. The replay runs up to what this process has published
and only then joins the hub, without awaiting in between, so the two parts meet exactly."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import select

from innominatus.db.models import Event, Resource
from innominatus.events.mailbox import Mailbox, Overflow
from innominatus.events.types import (
    EventFilter,
    Revoked,
    StateEvent,
    StepEvent,
    StepFilter,
    SubscriberTooSlow,
    Watch,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from innominatus.store import Store

REPLAY_BATCH = 500
T = TypeVar("T")


async def resources_of(session: AsyncSession, ids: Iterable[str]) -> dict[str, Resource]:
    """The resource rows events refer to, by id, in one query."""
    wanted = set(ids)
    if not wanted:
        return {}
    return {r.id: r for r in await session.scalars(select(Resource).where(Resource.id.in_(wanted)))}


async def read_events(
    session: AsyncSession,
    flt: EventFilter,
    after: int,
    *,
    upto: int | None = None,
    limit: int = REPLAY_BATCH,
    known: Mapping[int, Resource] | None = None,
) -> list[StateEvent]:
    """Stored events after `after` (and up to `upto`) matching `flt`, oldest first, with their resources.
    `known`: resource rows the caller holds, by event id (not read again)."""
    query = select(Event).where(Event.sequence > after).order_by(Event.sequence).limit(limit)
    if upto is not None:
        query = query.where(Event.sequence <= upto)
    if flt.application is not None:
        query = query.where(Event.application_name == flt.application)
    if flt.resource_id is not None:
        query = query.where(Event.resource_id == flt.resource_id)
    if flt.team is not None:
        query = query.where(Event.team == flt.team)
    rows = (await session.scalars(query)).all()
    known = known or {}
    resources = await resources_of(session, (row.resource_id for row in rows if row.id not in known))
    return [StateEvent.from_row(row, known.get(row.id) or resources.get(row.resource_id)) for row in rows]


async def load_events(
    store: Store, flt: EventFilter, after: int, *, upto: int | None = None, limit: int = REPLAY_BATCH
) -> list[StateEvent]:
    async with store.session() as session:
        return await read_events(session, flt, after, upto=upto, limit=limit)


async def stream(
    store: Store,
    flt: EventFilter,
    after_sequence: int | None = None,
    *,
    watch: Watch | None = None,
    page: int = REPLAY_BATCH,
) -> AsyncIterator[StateEvent]:
    """Replay then live. Ends with SubscriberTooSlow (saying where to resume) if the subscriber falls
    behind, and with Revoked once `watch` says its credentials are gone. A replay holds one `page` of
    events at a time, however long the history."""
    hub = store.hub
    cursor = await store.sequencer.high_water() if after_sequence is None else after_sequence
    while after_sequence is not None:
        upto = await store.sequencer.high_water()
        while cursor < upto:
            events = await load_events(store, flt, cursor, upto=upto, limit=page)
            for event in events:
                if watch is not None and watch.revoked:
                    raise Revoked
                cursor = event.sequence
                yield event
            if len(events) < page:
                cursor = upto  # nothing else of ours up to there
        if hub.published == upto:
            break  # caught up: join the live stream right now, with no await in between
    mailbox = hub.subscribe(flt)
    try:
        with _watched(mailbox, watch):
            while True:
                try:
                    event = await _next(mailbox, watch)
                except Overflow:
                    raise SubscriberTooSlow(cursor) from None
                cursor = event.sequence
                yield event
    finally:
        hub.unsubscribe(mailbox)


async def steps(store: Store, flt: StepFilter, *, watch: Watch | None = None) -> AsyncIterator[StepEvent]:
    """Step events as they happen (no replay: the stored steps and logs are the history)."""
    hub = store.hub
    mailbox: Mailbox[StepFilter, StepEvent] = hub.subscribe_steps(flt)
    try:
        with _watched(mailbox, watch):
            while True:
                try:
                    yield await _next(mailbox, watch)
                except Overflow:
                    raise SubscriberTooSlow(None) from None
    finally:
        hub.unsubscribe_steps(mailbox)


@contextlib.contextmanager
def _watched(mailbox: Mailbox[Any, Any], watch: Watch | None) -> Iterator[None]:
    """While inside, a revoked token wakes the subscriber the way a full mailbox does."""
    if watch is None:
        yield
        return
    watch.attach(mailbox.overflow)
    try:
        yield
    finally:
        watch.detach(mailbox.overflow)


async def _next(mailbox: Mailbox[Any, T], watch: Watch | None) -> T:
    """The next event; Revoked once `watch` says so, Overflow when the subscriber fell behind."""
    if watch is not None and watch.revoked:
        raise Revoked
    try:
        return await mailbox.get()
    except Overflow:
        if watch is not None and watch.revoked:
            raise Revoked from None
        raise
