"""A transaction's new rows and changed columns go out without the ORM's flush (db/writes.py): on PostgreSQL
as one statement, on SQLite straight into the sqlite3 connection, row by row. Either way the objects are as
the ORM would have left them: persistent, unchanged, with their defaults and generated keys. What it cannot
write as the ORM would, the ORM still writes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import delete, event, func, inspect, select
from sqlalchemy.orm.exc import StaleDataError

from innominatus import lifecycle, specs
from innominatus.db import writes
from innominatus.db.models import Application, Event, Resource, new_id
from innominatus.providers import load_catalog
from innominatus.states import ResourceState
from innominatus.store import Store
from tests.conftest import ProviderFactory, workflow_yaml
from tests.integration.test_query_counts import counting


def spec(app: str, resources: int) -> str:
    lines = [f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\ncontainers:\n  main:\n    image: nginx"]
    lines.append("resources:")
    lines += [f"  r{i}:\n    type: test-db\n    params:\n      size: {i}" for i in range(resources)]
    return "\n".join(lines) + "\n"


def only_postgresql(store: Store) -> None:
    if store.dialect != "postgresql":
        pytest.skip("SQLite writes each row on its own: nothing to tell apart, no statement to outgrow")


@contextmanager
def through_sqlalchemy(store: Store) -> Iterator[list[str]]:
    """What SQLAlchemy itself executes on the writer (the ORM's flush would show here)."""
    seen: list[str] = []

    def hook(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", hook)
    try:
        yield seen
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", hook)


async def stored_application(store: Store, name: str) -> Application:
    async with store.transaction() as session:
        app = Application(name=name, revision=1, spec={})
        session.add(app)
    return app


def inserts_in(statements: list[str]) -> list[str]:
    return [s.split("(")[0].strip() for s in statements if "INSERT INTO" in s]


async def test_a_submission_writes_its_rows_without_the_orms_flush(
    store: Store, make_provider: ProviderFactory
) -> None:
    wf = workflow_yaml("provision-test", "- name: a\n  type: policy\n  config:\n    script: 'true'\n")
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    with counting(store) as statements, through_sqlalchemy(store) as executed:
        result = await specs.submit(store, catalog, spec("three", 3))
    written = [s for s in statements if "INSERT INTO" in s]
    if store.dialect == "postgresql":
        assert len(written) == 1 and written[0].startswith("WITH new_0 AS"), inserts_in(statements)
    else:  # application, revision, three resources and their three events: each row by itself
        assert len(written) == 8, inserts_in(statements)
        assert not [s for s in executed if "INSERT INTO" in s], inserts_in(executed)  # none by the ORM
    assert sorted(r.name for r in result.resources) == ["r0", "r1", "r2"]
    for resource in result.resources:
        state = inspect(resource)
        assert state.persistent or state.detached  # written, never pending
        assert resource.created_at is not None and resource.properties == {"size": int(resource.name[1])}
    async with store.session() as session:
        stored = {
            r.name: r
            for r in await session.scalars(select(Resource).where(Resource.application_name == "three"))
        }
        events = list(
            await session.scalars(select(Event).where(Event.application_name == "three").order_by(Event.id))
        )
    assert {n: (r.id, r.state, r.properties, r.depends_on) for n, r in stored.items()} == {
        r.name: (r.id, r.state, r.properties, r.depends_on) for r in result.resources
    }
    # One REQUESTED event per resource, in the order they were written, each naming its own resource.
    assert [(e.resource_id, e.to_state) for e in events] == [
        (r.id, ResourceState.REQUESTED) for r in sorted(result.resources, key=lambda r: r.name)
    ]


async def test_the_objects_are_the_sessions_own_after_the_insert(store: Store) -> None:
    async with store.transaction() as session:
        app = Application(name="own", revision=1, spec={})
        session.add(app)
        resource = Resource(
            application_id="", application_name="own", name="db", type="t", provider=None, outputs={}
        )
        await writes.write_pending(session)  # nothing yet refers to the application: it goes first
        assert not session.new
        assert app.id is not None and app.created_at is not None  # Python defaults, as the ORM fills them
        assert inspect(app).persistent and not session.dirty and not inspect(app).modified
        resource.application_id = app.id
        session.add(resource)
        event = await lifecycle.create(session, resource)
        await writes.write_pending(session)
        assert event.id is not None and inspect(event).persistent
        # The identity map has them: a query in the same transaction hands back the same objects.
        assert await session.get(Resource, resource.id) is resource
        assert (await session.scalars(select(Event).where(Event.resource_id == resource.id))).one() is event
        resource.state = ResourceState.PROVISIONING  # a change after the insert is an UPDATE, as usual
    async with store.session() as session:
        assert (
            await session.scalar(select(Resource.state).where(Resource.id == resource.id)) == "PROVISIONING"
        )
        assert await session.scalar(select(Event.id).where(Event.resource_id == resource.id)) == event.id


async def test_rows_it_cannot_tell_apart_are_left_to_the_orm(store: Store) -> None:
    same: dict[str, Any] = {"resource_id": new_id(), "application_name": "twins", "from_state": None}
    async with store.transaction() as session:
        with counting(store) as statements:
            first = Event(**same, to_state="REQUESTED")
            second = Event(**same, to_state="REQUESTED")  # the same sentinels: keys could be swapped
            app = Application(name="twins", revision=1, spec={})
            session.add_all([first, second, app])
            await writes.write_pending(session)
            if store.dialect == "postgresql":  # the application went; the twins wait for the flush
                assert set(session.new) == {first, second}
            else:  # SQLite reads each row's key as it goes in: nothing to tell apart
                assert not session.new
    assert first.id is not None and second.id is not None and first.id != second.id
    inserts = len([s for s in statements if "INSERT INTO" in s])
    assert inserts == (1 if store.dialect == "postgresql" else 3)
    async with store.session() as session:
        stored = await session.scalars(select(Event.id).where(Event.application_name == "twins"))
        assert sorted(stored) == sorted([first.id, second.id])


async def test_on_sqlite_a_row_it_cannot_write_leaves_the_transaction_to_the_orm(store: Store) -> None:
    """When one new row must be the ORM's (here an SQL expression among its values, which PostgreSQL's
    statement carries but SQLite's rows do not), so are all the others, in the order the ORM keeps."""
    if store.dialect != "sqlite":
        pytest.skip("PostgreSQL's one statement carries SQL expressions too")
    with through_sqlalchemy(store) as executed:
        async with store.transaction() as session:
            app = Application(name="expr", revision=1, spec={}, updated_at=func.current_timestamp())
            session.add(app)
            session.add(Event(resource_id=new_id(), application_name="expr", to_state="REQUESTED"))
            await writes.write_pending(session)
            assert len(session.new) == 2  # neither went
    assert [s.split(" (")[0] for s in executed if "INSERT INTO" in s] == [
        "INSERT INTO applications",
        "INSERT INTO events",
    ]  # the ORM's, at commit
    async with store.session() as session:
        stored = await session.get(Application, app.id)
        assert stored is not None and stored.updated_at is not None
        assert await session.scalar(select(Event.id).where(Event.application_name == "expr")) is not None


async def test_a_rollback_takes_back_what_went_past_the_orm(store: Store) -> None:
    with pytest.raises(RuntimeError, match="changed my mind"):
        async with store.transaction() as session:
            app = Application(name="undone", revision=1, spec={})
            session.add(app)
            await writes.write_pending(session)
            assert inspect(app).persistent
            raise RuntimeError("changed my mind")
    assert inspect(app).transient  # as after a rolled-back flush: never stored
    async with store.session() as session:
        assert await session.scalar(select(Application.id).where(Application.name == "undone")) is None


async def test_a_large_spec_is_written_by_the_orm(store: Store, make_provider: ProviderFactory) -> None:
    wf = workflow_yaml("provision-test", "- name: a\n  type: policy\n  config:\n    script: 'true'\n")
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    count = writes.MAX_ROWS  # with its application, revision and events: past the limit
    with counting(store) as statements:
        result = await specs.submit(store, catalog, spec("large", count))
    assert len(result.resources) == count
    assert not any(s.startswith("WITH new_0") for s in statements)
    assert len([s for s in statements if s.startswith("INSERT INTO")]) >= 4  # the ORM's, a table each
    async with store.session() as session:
        stored = await session.scalars(select(Resource.name).where(Resource.application_name == "large"))
        assert sorted(stored) == sorted(f"r{i}" for i in range(count))


async def test_changed_columns_go_out_with_the_new_rows(store: Store) -> None:
    app = await stored_application(store, "changes")
    with counting(store) as statements, through_sqlalchemy(store) as executed:
        async with store.transaction() as session:
            loaded = await session.get(Application, app.id)
            assert loaded is not None
            loaded.revision = 2
            loaded.spec = {"v": 2}
            session.add(Event(resource_id=new_id(), application_name="changes", to_state="REQUESTED"))
            await writes.write_pending(session)
            assert not session.new and not session.is_modified(loaded) and not inspect(loaded).modified
    # The read, then the insert and the update; the commit has nothing left to write.
    if store.dialect == "postgresql":  # in one statement
        assert len(statements) == 2 and "UPDATE applications" in statements[1], statements
    else:  # each by itself, past SQLAlchemy
        assert [s.split(" (")[0].split(" SET")[0] for s in statements[1:]] == [
            "UPDATE applications",
            "INSERT INTO events",
        ], statements
        assert [s.split()[0] for s in executed if not s.startswith("BEGIN")] == ["SELECT"], executed
    async with store.session() as session:
        stored = await session.get(Application, app.id)
        assert stored is not None and (stored.revision, stored.spec) == (2, {"v": 2})


async def test_an_update_whose_row_is_gone_fails_the_transaction(store: Store) -> None:
    app = await stored_application(store, "gone")
    with pytest.raises(StaleDataError):
        async with store.transaction() as session:
            loaded = await session.get(Application, app.id)
            assert loaded is not None
            # Behind the ORM's back (it would forget the object otherwise): the row goes, the object stays.
            await (await session.connection()).execute(
                delete(Application.__table__).where(Application.__table__.c.id == app.id)
            )
            loaded.revision = 5
    async with store.session() as session:  # rolled back whole: the row is still there, unchanged
        assert await session.scalar(select(Application.revision).where(Application.id == app.id)) == 1
