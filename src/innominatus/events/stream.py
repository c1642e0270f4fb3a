"""A subscription: the stored events after `after_sequence` (replay, in pages), then live ones from the
hub, with nothing lost or repeated in between. The replay runs up to what this process has published
and only then joins the hub, without awaiting in between, so the two parts meet exactly."""

from __future__ import annotations

import collections
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import bindparam, select

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
T = TypeVar("T")


Rows = Callable[[Any, "dict[str, Any] | None"], Awaitable[list[Any]]]  # Store.rows: a Core query's rows

_EVENTS = Event.__table__
_RESOURCES = Resource.__table__
_RESOURCE_LABELS = tuple(f"r_{column.key}" for column in _RESOURCES.c)  # beside the event's own names
_ResourceRecord = collections.namedtuple("Resource", [column.key for column in _RESOURCES.c])  # type: ignore[misc]


@functools.cache
def _events_query(application: bool, resource: bool, team: bool, upto: bool) -> Any:
    """Events after a position with the resources they refer to, in one query; built once per shape
    (the ORM's two queries, events then resources, cost about four times the CPU)."""
    query = (
        select(*_EVENTS.c, *(c.label(label) for c, label in zip(_RESOURCES.c, _RESOURCE_LABELS, strict=True)))
        .outerjoin(_RESOURCES, _RESOURCES.c.id == _EVENTS.c.resource_id)
        .where(_EVENTS.c.sequence > bindparam("after"))
    )
    if upto:
        query = query.where(_EVENTS.c.sequence <= bindparam("upto"))
    for wanted, column in zip(
        (application, resource, team),
        (_EVENTS.c.application_name, _EVENTS.c.resource_id, _EVENTS.c.team),
        strict=True,
    ):
        if wanted:
            query = query.where(column == bindparam(column.key))
    return query.order_by(_EVENTS.c.sequence).limit(bindparam("limit"))


def _resource_record(row: Any) -> Resource | None:
    """The resource columns of a joined row as a plain row with the model's attribute names (readers use
    nothing else); None when the event's resource is gone."""
    values = [getattr(row, label) for label in _RESOURCE_LABELS]
    return None if values[0] is None else _ResourceRecord._make(values)  # type: ignore[no-any-return]


async def read_events(
    rows: Rows,
    flt: EventFilter,
    after: int,
    *,
    upto: int | None = None,
    limit: int = REPLAY_BATCH,
    known: Mapping[int, Resource] | None = None,
) -> list[StateEvent]:
    """Stored events after `after` (and up to `upto`) matching `flt`, oldest first, with their resources.
    `known`: resource rows the caller holds, by event id (their own writers' rows, kept as they are)."""
    query = _events_query(
        flt.application is not None, flt.resource_id is not None, flt.team is not None, upto is not None
    )
    parameters: dict[str, Any] = {"after": after, "limit": limit}
    if upto is not None:
        parameters["upto"] = upto
    if flt.application is not None:
        parameters["application_name"] = flt.application
    if flt.resource_id is not None:
        parameters["resource_id"] = flt.resource_id
    if flt.team is not None:
        parameters["team"] = flt.team
    known = known or {}
    return [
        StateEvent.from_row(row, known[row.id] if row.id in known else _resource_record(row))
        for row in await rows(query, parameters)
    ]


async def load_events(
    store: Store, flt: EventFilter, after: int, *, upto: int | None = None, limit: int = REPLAY_BATCH
) -> list[StateEvent]:
    return await read_events(store.rows, flt, after, upto=upto, limit=limit)


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
