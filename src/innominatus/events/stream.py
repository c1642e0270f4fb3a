"""A subscription: the stored events after `after_sequence` (replay, in pages), then live ones from the
hub, with nothing lost or repeated in between. The replay runs up to what this process has published
and only then joins the hub, without awaiting in between, so the two parts meet exactly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

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
    from innominatus.store import Store

REPLAY_BATCH = 500


async def load_events(
    store: Store, flt: EventFilter, after: int, *, upto: int | None = None, limit: int = REPLAY_BATCH
) -> list[StateEvent]:
    """Stored events after `after` (and up to `upto`) matching `flt`, oldest first, with their resources."""
    query = select(Event).where(Event.sequence > after).order_by(Event.sequence).limit(limit)
    if upto is not None:
        query = query.where(Event.sequence <= upto)
    if flt.application is not None:
        query = query.where(Event.application_name == flt.application)
    if flt.resource_id is not None:
        query = query.where(Event.resource_id == flt.resource_id)
    if flt.team is not None:
        query = query.where(Event.team == flt.team)
    async with store.session() as session:
        rows = (await session.scalars(query)).all()
        ids = {row.resource_id for row in rows}
        resources = (
            {r.id: r for r in await session.scalars(select(Resource).where(Resource.id.in_(ids)))}
            if ids
            else {}
        )
    return [StateEvent.from_row(row, resources.get(row.resource_id)) for row in rows]


async def stream(
    store: Store, flt: EventFilter, after_sequence: int | None = None, *, watch: Watch | None = None
) -> AsyncIterator[StateEvent]:
    """Replay then live. Ends with SubscriberTooSlow (saying where to resume) if the subscriber falls
    behind, and with Revoked once `watch` says its credentials are gone."""
    hub = store.hub
    cursor = await store.sequencer.high_water() if after_sequence is None else after_sequence
    while after_sequence is not None:
        upto = await store.sequencer.high_water()
        while cursor < upto:
            page = await load_events(store, flt, cursor, upto=upto)
            for event in page:
                if watch is not None and watch.revoked:
                    raise Revoked
                cursor = event.sequence
                yield event
            if len(page) < REPLAY_BATCH:
                cursor = upto  # nothing else of ours up to there
        if hub.published == upto:
            break  # caught up: join the live stream right now, with no await in between
    mailbox = hub.subscribe(flt)
    end = mailbox.overflow  # anything that must end it wakes it the same way
    if watch is not None:
        watch.attach(end)
    try:
        while True:
            if watch is not None and watch.revoked:
                raise Revoked
            try:
                event = await mailbox.get()
            except Overflow:
                if watch is not None and watch.revoked:
                    raise Revoked from None
                raise SubscriberTooSlow(cursor) from None
            cursor = event.sequence
            yield event
    finally:
        hub.unsubscribe(mailbox)
        if watch is not None:
            watch.detach(end)


async def steps(store: Store, flt: StepFilter, *, watch: Watch | None = None) -> AsyncIterator[StepEvent]:
    """Step events as they happen (no replay: the stored steps and logs are the history)."""
    hub = store.hub
    mailbox: Mailbox[StepFilter, StepEvent] = hub.subscribe_steps(flt)
    end = mailbox.overflow
    if watch is not None:
        watch.attach(end)
    try:
        while True:
            try:
                event = await mailbox.get()
            except Overflow:
                if watch is not None and watch.revoked:
                    raise Revoked from None
                raise SubscriberTooSlow(None) from None
            if watch is not None and watch.revoked:
                raise Revoked
            yield event
    finally:
        hub.unsubscribe_steps(mailbox)
        if watch is not None:
            watch.detach(end)
