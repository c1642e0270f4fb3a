"""On PostgreSQL a transaction's new rows and changed columns go out as one statement (db/writes.py) and
the objects are as the ORM would have left them: persistent, unchanged, with their defaults and generated
keys. What it cannot write as the ORM would, the ORM still writes. On SQLite the ORM's flush writes all."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, inspect, select
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
        pytest.skip("SQLite keeps the ORM's flush")


async def stored_application(store: Store, name: str) -> Application:
    async with store.transaction() as session:
        app = Application(name=name, revision=1, spec={})
        session.add(app)
    return app


def inserts_in(statements: list[str]) -> list[str]:
    return [s.split("(")[0].strip() for s in statements if "INSERT INTO" in s]


async def test_a_submission_writes_its_rows_in_one_statement_on_postgresql(
    store: Store, make_provider: ProviderFactory
) -> None:
    wf = workflow_yaml("provision-test", "- name: a\n  type: policy\n  config:\n    script: 'true'\n")
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    with counting(store) as statements:
        result = await specs.submit(store, catalog, spec("three", 3))
    written = [s for s in statements if "INSERT INTO" in s]
    if store.dialect == "postgresql":
        assert len(written) == 1 and written[0].startswith("WITH new_0 AS"), inserts_in(statements)
    else:  # the ORM's flush: a statement per table at least
        assert len(written) >= 4
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
    only_postgresql(store)
    async with store.transaction() as session:
        app = Application(name="own", revision=1, spec={})
        session.add(app)
        resource = Resource(
            application_id="", application_name="own", name="db", type="t", provider=None, outputs={}
        )
        await writes.write_pending(session)  # nothing yet refers to the application: it goes first
        assert not session.new
        assert app.id is not None and app.created_at is not None  # Python defaults, as the ORM fills them
        assert inspect(app).persistent and not session.dirty
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
    only_postgresql(store)
    same: dict[str, Any] = {"resource_id": new_id(), "application_name": "twins", "from_state": None}
    async with store.transaction() as session:
        with counting(store) as statements:
            first = Event(**same, to_state="REQUESTED")
            second = Event(**same, to_state="REQUESTED")  # the same sentinels: keys could be swapped
            app = Application(name="twins", revision=1, spec={})
            session.add_all([first, second, app])
            await writes.write_pending(session)
            assert set(session.new) == {first, second}  # the application went; the twins wait for the flush
    assert first.id is not None and second.id is not None and first.id != second.id
    assert len([s for s in statements if "INSERT INTO" in s]) == 1


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


async def test_changed_columns_go_out_in_the_same_statement(store: Store) -> None:
    only_postgresql(store)
    app = await stored_application(store, "changes")
    with counting(store) as statements:
        async with store.transaction() as session:
            loaded = await session.get(Application, app.id)
            assert loaded is not None
            loaded.revision = 2
            loaded.spec = {"v": 2}
            session.add(Event(resource_id=new_id(), application_name="changes", to_state="REQUESTED"))
            await writes.write_pending(session)
            assert not session.new and not session.is_modified(loaded)
    # The read, then one statement with the insert and the update; the commit has nothing left to write.
    assert len(statements) == 2 and "UPDATE applications" in statements[1], statements
    async with store.session() as session:
        stored = await session.get(Application, app.id)
        assert stored is not None and (stored.revision, stored.spec) == (2, {"v": 2})


async def test_an_update_whose_row_is_gone_fails_the_transaction(store: Store) -> None:
    only_postgresql(store)
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
