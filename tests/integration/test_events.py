"""Durable events and live fan-out: replay, live streaming, filters, and a slow subscriber catching up."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from innominatus import events, lifecycle
from innominatus.db import models
from innominatus.events import EventFilter, StateEvent, stream
from innominatus.states import ResourceState
from innominatus.store import Store
from tests.integration.test_query_counts import counting


async def make_resource(store: Store, app: str, name: str = "db") -> str:
    async with store.transaction() as session:
        application = models.Application(name=app, revision=1, spec={})
        session.add(application)
        await session.flush()
        resource = models.Resource(
            application_id=application.id,
            application_name=app,
            name=name,
            type="t",
            properties={},
            outputs={},
        )
        await lifecycle.create(session, resource)
        return resource.id


async def move(store: Store, resource_id: str, to: ResourceState) -> None:
    async with store.transaction() as session:
        resource = await session.get(models.Resource, resource_id)
        assert resource is not None
        await lifecycle.transition(session, resource, to, "test")


async def take(agen: object, n: int) -> list[StateEvent]:
    out: list[StateEvent] = []
    async with asyncio.timeout(10):
        async for event in agen:  # type: ignore[attr-defined]
            out.append(event)
            if len(out) == n:
                break
    return out


async def test_sequences_start_at_one_and_grow(store: Store) -> None:
    rid = await make_resource(store, "app-a")
    await move(store, rid, ResourceState.PROVISIONING)
    await move(store, rid, ResourceState.ACTIVE)
    stored = await events.load_events(store, EventFilter(), 0)
    assert [e.sequence for e in stored] == [1, 2, 3]
    assert [(e.from_state, e.to_state) for e in stored] == [
        (None, "REQUESTED"),
        ("REQUESTED", "PROVISIONING"),
        ("PROVISIONING", "ACTIVE"),
    ]


async def test_replay_then_live_without_gaps_or_duplicates(store: Store) -> None:
    rid = await make_resource(store, "app-a")
    await move(store, rid, ResourceState.PROVISIONING)
    agen = stream(store, EventFilter(application="app-a"), after_sequence=1)
    first = await take(agen, 1)
    assert [e.to_state for e in first] == ["PROVISIONING"]
    await move(store, rid, ResourceState.ACTIVE)
    live = await take(agen, 1)
    assert [e.to_state for e in live] == ["ACTIVE"]
    await agen.aclose()


async def test_filters_by_application_and_resource(store: Store) -> None:
    a = await make_resource(store, "app-a")
    b = await make_resource(store, "app-b")
    by_app = stream(store, EventFilter(application="app-b"), after_sequence=0)
    by_id = stream(store, EventFilter(resource_id=a), after_sequence=0)
    assert [e.resource_id for e in await take(by_app, 1)] == [b]
    assert [e.resource_id for e in await take(by_id, 1)] == [a]
    await move(store, b, ResourceState.PROVISIONING)
    await move(store, a, ResourceState.PROVISIONING)
    assert [(e.resource_id, e.to_state) for e in await take(by_app, 1)] == [(b, "PROVISIONING")]
    assert [(e.resource_id, e.to_state) for e in await take(by_id, 1)] == [(a, "PROVISIONING")]
    await by_app.aclose()
    await by_id.aclose()


async def test_live_only_without_after_sequence(store: Store) -> None:
    rid = await make_resource(store, "app-a")
    agen = stream(store, EventFilter(application="app-a"))
    pending = asyncio.ensure_future(take(agen, 1))
    await asyncio.sleep(0.05)
    await move(store, rid, ResourceState.PROVISIONING)
    assert [e.to_state for e in await pending] == ["PROVISIONING"]
    await agen.aclose()


async def test_slow_subscriber_is_ended_with_where_to_resume(store: Store) -> None:
    """A live subscriber that does not read while its queue fills up is ended, told the afterSequence to
    resume from; resuming there loses nothing. Another subscriber is not affected."""
    store.hub.queue_size = 3
    rid = await make_resource(store, "app-a")
    slow = stream(store, EventFilter(application="app-a"))
    other = stream(store, EventFilter(application="app-a"))
    first = asyncio.ensure_future(take(slow, 1))
    reading = asyncio.ensure_future(take(other, 11))
    await asyncio.sleep(0.05)  # both are live now
    await move(store, rid, ResourceState.PROVISIONING)
    assert [e.sequence for e in await first] == [2]
    # Ten transitions while `slow` is not reading: its queue of 3 overflows.
    for to in [ResourceState.FAILED, ResourceState.PROVISIONING] * 5:
        await move(store, rid, to)
    assert [e.sequence for e in await reading] == list(range(2, 13))
    got: list[int] = []
    with pytest.raises(events.SubscriberTooSlow) as ended:
        async for event in slow:
            got.append(event.sequence)
    assert got == [3, 4, 5]  # what was queued before it overflowed
    assert ended.value.after_sequence == 5
    assert "afterSequence: 5" in str(ended.value)
    resumed = stream(store, EventFilter(application="app-a"), after_sequence=ended.value.after_sequence)
    assert [e.sequence for e in await take(resumed, 7)] == list(range(6, 13))
    await resumed.aclose()
    await other.aclose()
    assert store.hub.subscriber_count == 0


async def test_replaying_subscriber_catches_up_from_the_table(store: Store) -> None:
    """While a subscriber still replays, what happens meanwhile is read from the table, not queued."""
    store.hub.queue_size = 3
    rid = await make_resource(store, "app-a")
    agen = stream(store, EventFilter(application="app-a"), after_sequence=0)
    assert [e.sequence for e in await take(agen, 1)] == [1]
    for to in [ResourceState.PROVISIONING, ResourceState.FAILED] * 5:
        await move(store, rid, to)
    assert [e.sequence for e in await take(agen, 10)] == list(range(2, 12))
    await agen.aclose()


async def test_events_carry_the_resource_loaded_once(store: Store) -> None:
    """Every subscriber gets the same event object, with the resource row attached (no query each)."""
    rid = await make_resource(store, "app-a")
    first = stream(store, EventFilter(application="app-a"))
    second = stream(store, EventFilter())
    pending = [asyncio.ensure_future(take(s, 1)) for s in (first, second)]
    await asyncio.sleep(0.05)
    await move(store, rid, ResourceState.PROVISIONING)
    [[a], [b]] = [await p for p in pending]
    assert a is b
    assert a.resource is not None
    assert (a.resource.id, a.resource.state) == (rid, "PROVISIONING")
    await first.aclose()
    await second.aclose()


async def test_commit_order_follows_sequence_order(store: Store) -> None:
    """A slow transaction holding event N must not let event N+1 commit first (a resumer would skip N)."""
    a = await make_resource(store, "app-a")
    b = await make_resource(store, "app-b")
    published: list[int] = []
    store.hub.add_listener(lambda e: published.append(e.sequence))

    async def slow() -> None:
        async with store.transaction() as session:
            row = await session.get(models.Resource, a)
            assert row is not None
            await lifecycle.transition(session, row, ResourceState.PROVISIONING, "slow")
            await asyncio.sleep(0.3)

    async def fast() -> None:
        await asyncio.sleep(0.1)
        await move(store, b, ResourceState.PROVISIONING)

    await asyncio.gather(slow(), fast())
    assert published == sorted(published)
    assert len(published) == 2


async def test_a_replay_holds_one_page_of_history_at_a_time(store: Store) -> None:
    rid = await make_resource(store, "paged-replay")
    for state in [ResourceState.PROVISIONING, ResourceState.ACTIVE] + [
        ResourceState.UPDATING,
        ResourceState.ACTIVE,
    ] * 4:
        await move(store, rid, state)
    expected = await _all_sequences(store, rid)
    assert len(expected) >= 8
    events = stream(store, EventFilter(resource_id=rid), 0, page=3)
    with counting(store) as statements:
        replayed = [e async for e in _until(events, expected[-1])]
    assert [e.sequence for e in replayed] == expected  # everything, in order
    pages = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "FROM events" in s]
    assert len(pages) == -(-len(expected) // 3)  # one query per page of three: never the whole history
    assert len(statements) == len(pages)  # each page reads its events' resources in the same statement
    assert {(e.resource.id, e.resource.name) for e in replayed if e.resource is not None} == {(rid, "db")}
    assert all(e.resource is not None for e in replayed)


async def _all_sequences(store: Store, rid: str) -> list[int]:
    async with store.session() as session:
        rows = await session.scalars(
            select(models.Event.sequence)
            .where(models.Event.resource_id == rid)
            .order_by(models.Event.sequence)
        )
        return [int(s) for s in rows]


async def _until(events: Any, last: int) -> Any:
    async with asyncio.timeout(10):
        async for event in events:
            yield event
            if event.sequence == last:
                await events.aclose()
                return
