"""A first submission on PostgreSQL: its writes go out as one statement that is the whole transaction (no
look-up, BEGIN or COMMIT). An application stored without this process knowing (by another replica, before
a restart) makes that statement fail on its unique name, with nothing written, and the submission goes
again as a change, under the application's lock."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, text

from innominatus import specs
from innominatus.db import database
from innominatus.db.models import Application, ApplicationRevision, Event, Resource
from innominatus.events import EventHub
from innominatus.providers import Catalog
from innominatus.store import Store
from tests.integration.test_query_counts import counting

pytestmark = pytest.mark.postgres


def spec(app: str, *names: str) -> str:
    resources = "".join(f"  {name}:\n    type: postgres-mock\n" for name in names)
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\ncontainers:\n  main:\n    image: nginx\n"
        f"resources:\n{resources}"
    )


@pytest.fixture
def pg_store(store: Store) -> Store:
    if store.dialect != "postgresql":
        pytest.skip("SQLite's writer takes the database's write lock at BEGIN: nothing to leave out")
    return store


async def test_a_first_submission_is_one_statement(pg_store: Store, catalog: Catalog) -> None:
    begun: list[str] = []
    with counting(pg_store, begun) as statements:
        result = await specs.submit(pg_store, catalog, spec("first", "db"))
    assert result.changed and result.application.revision == 1
    assert begun == []
    # the writes, then (after the commit) the numbering of its event
    assert len(statements) == 2, statements
    assert statements[0].startswith("WITH new_0 AS")
    assert "innominatus_number_events" in statements[1]
    async with pg_store.session() as session:
        assert await session.scalar(select(Resource.state).where(Resource.application_name == "first")) == (
            "REQUESTED"
        )


async def test_an_application_stored_elsewhere_is_changed_under_its_lock(
    pg_store: Store, catalog: Catalog, db_url: str
) -> None:
    other = Store(database.create_engine(db_url), EventHub())  # another replica: it knows no names yet
    try:
        await specs.submit(pg_store, catalog, spec("shared", "db"))
        begun: list[str] = []
        with counting(other, begun) as statements:
            second = await specs.submit(other, catalog, spec("shared", "db", "cache"))
        assert (second.changed, second.application.revision) == (True, 2)
        # the first try's writes (refused: the name is taken), then the change under the lock
        assert statements[0].startswith("WITH new_0 AS")
        assert "FOR UPDATE" in statements[1]
        assert len(begun) == 1
        # Now known to `other`: the next change takes the lock at once.
        with counting(other, begun) as statements:
            third = await specs.submit(other, catalog, spec("shared", "cache"))
        assert third.application.revision == 3
        assert "FOR UPDATE" in statements[0]
    finally:
        await other.close()
    async with pg_store.session() as session:
        assert await session.scalar(select(func.count()).select_from(Application)) == 1
        revisions = await session.scalars(
            select(ApplicationRevision.revision).join(Application).where(Application.name == "shared")
        )
        assert sorted(revisions) == [1, 2, 3]  # the refused first try left nothing
        names = await session.scalars(
            select(Resource.name).where(Resource.application_name == "shared", Resource.state != "DELETED")
        )
        assert list(names) == ["cache"]  # db never ran: removing it from the spec deleted it at once


async def test_a_change_to_a_known_application_waits_for_its_lock(pg_store: Store, catalog: Catalog) -> None:
    await specs.submit(pg_store, catalog, spec("held", "db"))
    async with pg_store.engine.connect() as holder:
        await holder.execute(text("SELECT 1 FROM applications WHERE name = 'held' FOR UPDATE"))
        change = asyncio.create_task(specs.submit(pg_store, catalog, spec("held", "db", "cache")))
        await asyncio.sleep(0.5)
        assert not change.done()  # it waits for the application's lock
        await holder.rollback()
    result = await asyncio.wait_for(change, 10)
    assert result.application.revision == 2


async def test_racing_first_submissions_store_one_application(pg_store: Store, catalog: Catalog) -> None:
    texts = [spec("raced", "db"), spec("raced", "db", "cache")] * 5
    results = await asyncio.gather(*(specs.submit(pg_store, catalog, t) for t in texts))
    async with pg_store.session() as session:
        assert await session.scalar(select(func.count()).select_from(Application)) == 1
        revisions = sorted(await session.scalars(select(ApplicationRevision.revision)))
        live = set(await session.scalars(select(Resource.name).where(Resource.state != "DELETED")))
        events = await session.scalar(select(func.count()).select_from(Event))
    # Every submission that changed something made a revision, numbered without gaps; none was lost.
    assert revisions == list(range(1, sum(r.changed for r in results) + 1))
    assert results[0].changed
    assert "db" in live and live <= {"db", "cache"}
    assert events >= 1
