"""The resource state machine against real databases (SQLite and PostgreSQL, via the `store` fixture):
every allowed transition writes exactly one event row (the audit trail); illegal ones write nothing."""

from __future__ import annotations

from collections import deque

import pytest
from sqlalchemy import func, select

from innominatus import lifecycle
from innominatus.db.models import Application, Event, Resource
from innominatus.events import StateEvent
from innominatus.lifecycle import ALLOWED, IllegalTransition, can_transition
from innominatus.states import ResourceState as S
from innominatus.store import Store

EDGES = sorted(
    ((src, dst) for src, targets in ALLOWED.items() if src is not None for dst in targets),
    key=lambda e: (e[0].value, e[1].value),
)
ILLEGAL = [
    (S.DELETED, S.ACTIVE),
    (S.DELETED, S.REQUESTED),
    (S.DELETED, S.FAILED),
    (S.DELETED, S.DELETING),
    (S.ACTIVE, S.PROVISIONING),
    (S.ACTIVE, S.REQUESTED),
    (S.ACTIVE, S.DELETED),
    (S.ACTIVE, S.FAILED),
    (S.REQUESTED, S.ACTIVE),
    (S.REQUESTED, S.UPDATING),
    (S.REQUESTED, S.DELETING),
    (S.PROVISIONING, S.UPDATING),
    (S.PROVISIONING, S.DELETED),
    (S.UPDATING, S.PROVISIONING),
    (S.DELETING, S.ACTIVE),
    (S.FAILED, S.ACTIVE),
]


def path_to(state: S) -> list[S]:
    """The shortest run of legal transitions from REQUESTED to `state`."""
    queue: deque[list[S]] = deque([[S.REQUESTED]])
    while queue:
        route = queue.popleft()
        if route[-1] is state:
            return route[1:]
        queue.extend([*route, nxt] for nxt in sorted(ALLOWED[route[-1]]) if nxt not in route)
    raise AssertionError(f"{state} is unreachable")


async def new_resource(store: Store, app_name: str = "shop", name: str = "db") -> str:
    """An application and a resource row built with the ORM; the resource is created through lifecycle."""
    async with store.transaction() as session:
        app = (await session.scalars(select(Application).where(Application.name == app_name))).first()
        if app is None:
            app = Application(
                name=app_name, team="payments", revision=1, spec={"metadata": {"name": app_name}}
            )
            session.add(app)
            await session.flush()
        resource = Resource(
            application_id=app.id,
            application_name=app_name,
            team=app.team,
            name=name,
            type="postgres",
            state=S.REQUESTED.value,  # overwritten by lifecycle.create
            properties={},
        )
        event = await lifecycle.create(session, resource)
        assert event.from_state is None and event.to_state == S.REQUESTED
        return resource.id


async def move(store: Store, resource_id: str, to_state: S, reason: str | None = None) -> Event:
    """The transition, committed; the event row as stored once the sequencer has numbered it."""
    async with store.transaction() as session:
        resource = await session.get(Resource, resource_id)
        assert resource is not None
        event = await lifecycle.transition(session, resource, to_state, reason)
    async with store.session() as session:
        stored = await session.get(Event, event.id)
    assert stored is not None
    return stored


async def count_events(store: Store, resource_id: str) -> int:
    async with store.session() as session:
        events = await session.scalar(
            select(func.count()).select_from(Event).where(Event.resource_id == resource_id)
        )
    return int(events or 0)


async def state_of(store: Store, resource_id: str) -> str:
    async with store.session() as session:
        resource = await session.get(Resource, resource_id)
        assert resource is not None
        return resource.state


async def max_sequence(store: Store) -> int:
    async with store.session() as session:
        return int(await session.scalar(select(func.max(Event.sequence))) or 0)


# --- the table itself (no database) ---------------------------------------------------------------------


def test_all_seven_states_are_in_the_machine() -> None:
    assert {s.value for s in S} == {
        "REQUESTED", "PROVISIONING", "ACTIVE", "UPDATING", "DELETING", "DELETED", "FAILED",
    }  # fmt: skip
    assert set(ALLOWED) == {None, *S}
    assert ALLOWED[None] == {S.REQUESTED}
    assert ALLOWED[S.DELETED] == frozenset()
    for state in S:
        if state is not S.REQUESTED:
            assert path_to(state), state  # every state is reachable


@pytest.mark.parametrize(("src", "dst"), ILLEGAL, ids=lambda s: str(s))
def test_can_transition_illegal(src: S, dst: S) -> None:
    assert not can_transition(src, dst)


@pytest.mark.parametrize("state", [s for s in S if s is not S.REQUESTED])
def test_only_requested_starts(state: S) -> None:
    assert not can_transition(None, state)


# --- against the databases ----------------------------------------------------------------------------------


async def test_create_writes_one_event(store: Store) -> None:
    published: list[StateEvent] = []
    store.hub.add_listener(published.append)
    resource_id = await new_resource(store)
    assert await count_events(store, resource_id) == 1
    assert await state_of(store, resource_id) == "REQUESTED"
    async with store.session() as session:
        event = (await session.scalars(select(Event))).one()
    assert (event.from_state, event.to_state, event.reason) == (None, "REQUESTED", "requested by spec")
    assert (event.from_state, event.to_state, event.team, event.application_name) == (
        None,
        "REQUESTED",
        "payments",
        "shop",
    )
    assert event.sequence >= 1
    assert [(e.resource_id, e.from_state, e.to_state) for e in published] == [
        (resource_id, None, "REQUESTED")
    ]


async def test_every_allowed_transition(store: Store) -> None:
    """Each edge of the machine, on its own resource: one event row (the audit trail), sequence increasing."""
    last = 0
    for index, (src, dst) in enumerate(EDGES):
        resource_id = await new_resource(store, name=f"r{index}")
        for step in path_to(src):
            await move(store, resource_id, step)
        before = await count_events(store, resource_id)
        previous = await max_sequence(store)
        assert previous > last
        event = await move(store, resource_id, dst, reason=f"{src}->{dst}")
        assert await count_events(store, resource_id) == before + 1, (src, dst)
        assert await state_of(store, resource_id) == dst.value
        assert event.sequence > previous, (src, dst)
        assert (event.from_state, event.to_state, event.reason) == (src.value, dst.value, f"{src}->{dst}")
        async with store.session() as session:
            audit = (
                await session.scalars(
                    select(Event).where(Event.resource_id == resource_id).order_by(Event.id.desc()).limit(1)
                )
            ).one()
        assert (audit.from_state, audit.to_state, audit.reason) == (src.value, dst.value, f"{src}->{dst}")
        last = event.sequence
    assert len(EDGES) == sum(len(t) for s, t in ALLOWED.items() if s is not None)


async def test_full_lifecycle_history_and_global_sequence(store: Store) -> None:
    first = await new_resource(store, name="first")
    second = await new_resource(store, name="second")
    route = [S.PROVISIONING, S.ACTIVE, S.UPDATING, S.ACTIVE, S.DELETING, S.DELETED]
    for state in route:
        await move(store, first, state)
        await move(store, second, state)
    async with store.session() as session:
        events = list(await session.scalars(select(Event).order_by(Event.sequence)))
        audits = list(
            await session.scalars(select(Event).where(Event.resource_id == first).order_by(Event.id))
        )
    sequences = [e.sequence for e in events]
    assert sequences == sorted(set(sequences)) and len(sequences) == 2 * (len(route) + 1)
    chain = [(a.from_state, a.to_state) for a in audits]
    assert chain == list(
        zip(
            [None, "REQUESTED", *[s.value for s in route[:-1]]],
            ["REQUESTED", *[s.value for s in route]],
            strict=True,
        )
    )
    assert [(e.from_state, e.to_state) for e in events if e.resource_id == first] == chain


async def test_failed_records_the_reason_and_recovery_clears_it(store: Store) -> None:
    resource_id = await new_resource(store)
    await move(store, resource_id, S.PROVISIONING)
    await move(store, resource_id, S.FAILED, reason="step 'x' failed: exit code 1")
    async with store.session() as session:
        resource = await session.get(Resource, resource_id)
        assert resource is not None and resource.error_message == "step 'x' failed: exit code 1"
    await move(store, resource_id, S.PROVISIONING, reason="retry")
    async with store.session() as session:
        resource = await session.get(Resource, resource_id)
        assert resource is not None and resource.error_message is None


@pytest.mark.parametrize(("src", "dst"), ILLEGAL, ids=lambda s: str(s))
async def test_illegal_transition_writes_nothing(store: Store, src: S, dst: S) -> None:
    resource_id = await new_resource(store)
    for step in path_to(src):
        await move(store, resource_id, step)
    before = await count_events(store, resource_id)
    sequence = await max_sequence(store)
    with pytest.raises(IllegalTransition) as err:
        await move(store, resource_id, dst)
    assert f"{src} → {dst} is not allowed" in str(err.value) and resource_id in str(err.value)
    assert await count_events(store, resource_id) == before
    assert await state_of(store, resource_id) == src.value
    assert await max_sequence(store) == sequence


async def test_illegal_transition_in_a_committed_transaction_writes_nothing(store: Store) -> None:
    """The caller catches IllegalTransition and commits anyway: still no audit, no event, no state change."""
    resource_id = await new_resource(store)
    published: list[StateEvent] = []
    store.hub.add_listener(published.append)
    async with store.transaction() as session:
        resource = await session.get(Resource, resource_id)
        assert resource is not None
        with pytest.raises(IllegalTransition):
            await lifecycle.transition(session, resource, S.ACTIVE)
    assert await count_events(store, resource_id) == 1
    assert await state_of(store, resource_id) == "REQUESTED"
    assert published == []


async def test_rolled_back_transition_leaves_no_rows(store: Store) -> None:
    """Audit and event are in the caller's transaction: a failure later in it removes both."""
    resource_id = await new_resource(store)
    published: list[StateEvent] = []
    store.hub.add_listener(published.append)
    with pytest.raises(RuntimeError, match="later failure"):
        async with store.transaction() as session:
            resource = await session.get(Resource, resource_id)
            assert resource is not None
            await lifecycle.transition(session, resource, S.PROVISIONING)
            raise RuntimeError("later failure")
    assert await count_events(store, resource_id) == 1
    assert await state_of(store, resource_id) == "REQUESTED"
    assert published == []


async def test_creating_twice_is_illegal(store: Store) -> None:
    resource_id = await new_resource(store)
    async with store.transaction() as session:
        resource = await session.get(Resource, resource_id)
        assert resource is not None
        with pytest.raises(IllegalTransition, match="REQUESTED → REQUESTED is not allowed"):
            await lifecycle.transition(session, resource, S.REQUESTED)
    assert await count_events(store, resource_id) == 1
