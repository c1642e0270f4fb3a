"""Events another replica numbered (PostgreSQL): this replica publishes them read from the table, in order,
with their resources in the same statement. Its own events among them keep the row its writer holds."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from innominatus.db import database, models
from innominatus.events import EventHub, StateEvent
from innominatus.states import ResourceState
from innominatus.store import Store
from tests.integration.test_events import make_resource, move
from tests.integration.test_query_counts import counting

pytestmark = pytest.mark.postgres

NUMBERING_LOCK = 518455298  # migration 0004: the advisory lock each numbering pass takes


@pytest.fixture
def pg_store(store: Store) -> Store:
    if store.dialect != "postgresql":
        pytest.skip("SQLite serves one process: nothing is numbered elsewhere")
    return store


async def until(store: Store, query: str, n: int) -> None:
    async with asyncio.timeout(10):
        while (await store.rows(text(query)))[0].n < n:
            await asyncio.sleep(0.01)


WAITING = "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
UNNUMBERED = "SELECT count(*) AS n FROM events WHERE sequence IS NULL"


async def published(events: list[StateEvent], n: int) -> None:
    async with asyncio.timeout(10):
        while len(events) < n:
            await asyncio.sleep(0.01)


async def test_own_events_numbered_by_another_replica_keep_the_writers_row(
    pg_store: Store, db_url: str
) -> None:
    other = Store(database.create_engine(db_url), EventHub())  # another replica on the same database
    try:
        mine = await make_resource(pg_store, "mine")
        theirs = await make_resource(other, "theirs")
        here: list[StateEvent] = []
        there: list[StateEvent] = []
        pg_store.hub.add_listener(here.append)
        other.hub.add_listener(there.append)

        # The other replica's pass queues for the numbering lock before this replica's writer does, so
        # it numbers what both committed meanwhile.
        async with other.engine.connect() as holder:
            await holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": NUMBERING_LOCK})
            await holder.commit()
            their_pass = asyncio.ensure_future(other.sequencer.flush(()))
            await until(pg_store, WAITING, 1)
            their_write = asyncio.ensure_future(move(other, theirs, ResourceState.PROVISIONING))
            await until(pg_store, UNNUMBERED, 1)
            my_write = asyncio.ensure_future(move(pg_store, mine, ResourceState.PROVISIONING))
            await until(pg_store, WAITING, 2)
            await until(pg_store, UNNUMBERED, 2)
            await holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": NUMBERING_LOCK})
            await holder.commit()
            await asyncio.wait_for(asyncio.gather(their_pass, their_write, my_write), 10)

        numbered = [e for e in there if e.to_state == ResourceState.PROVISIONING]
        assert [e.resource_id for e in numbered] == [theirs, mine]
        assert [e.foreign for e in numbered] == [False, True]
        assert not [e for e in here if e.to_state == ResourceState.PROVISIONING]  # it comes by announcement

        before = len(here)
        with counting(pg_store) as statements:
            pg_store.sequencer.announced("other", numbered[-1].sequence)
            await published(here, before + 3)
        caught_up = here[before:]
        # the other replica's REQUESTED and PROVISIONING events, then this one's
        assert [(e.resource_id, e.to_state) for e in caught_up] == [
            (theirs, ResourceState.REQUESTED),
            (theirs, ResourceState.PROVISIONING),
            (mine, ResourceState.PROVISIONING),
        ]
        assert [e.sequence for e in caught_up[1:]] == [e.sequence for e in numbered]
        assert [e.foreign for e in caught_up] == [True, True, False]
        # one statement reads the events with their resources; this replica's own event keeps its
        # writer's row, the others carry the rows read with them
        assert len(statements) == 1, statements
        assert "FROM events LEFT OUTER JOIN resources" in statements[0]
        assert all(e.resource is not None and e.resource.state == "PROVISIONING" for e in caught_up)
        assert [e.resource.id for e in caught_up if e.resource is not None] == [theirs, theirs, mine]
        assert [isinstance(e.resource, models.Resource) for e in caught_up] == [False, False, True]
    finally:
        await other.close()
