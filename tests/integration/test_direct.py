"""Built-once statements through db/direct.py, straight on the driver's connection (sqlite3, asyncpg):
what `session.execute` would give (types converted both ways, pending changes flushed first, inside the
transaction, SQLAlchemy's errors)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, func, inspect, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import object_mapper

from innominatus.db import direct
from innominatus.db.models import Application
from innominatus.store import Store
from tests.integration.test_writes import stored_application, through_sqlalchemy

_apps = Application.__table__
_RENAME = (
    update(_apps)
    .where(_apps.c.id == bindparam("p_id"))
    .values(
        spec=bindparam("p_spec", type_=_apps.c.spec.type),
        updated_at=bindparam("p_at", type_=_apps.c.updated_at.type),
    )
    .returning(_apps.c.spec, _apps.c.updated_at, _apps.c.revision)
)
_READ = select(_apps.c.name, _apps.c.spec, _apps.c.created_at).where(_apps.c.name == bindparam("p_name"))
_BUMP = update(_apps).where(_apps.c.name == bindparam("p_name")).values(revision=_apps.c.revision + 1)
_ORM_READ = select(Application).where(Application.name == bindparam("p_name"))
_NAME = update(_apps).where(_apps.c.id == bindparam("p_id")).values(name=bindparam("p_name"))
_COUNT = select(func.count()).select_from(_apps)
_LOCKED = select(Application).where(Application.name == bindparam("p_name")).with_for_update()


async def test_values_and_rows_are_converted_as_the_session_does(store: Store) -> None:
    app = await stored_application(store, "typed")
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with through_sqlalchemy(store) as executed:
        async with store.transaction() as session:
            found = await direct.rows(session, _RENAME, {"p_id": app.id, "p_spec": {"a": [1, 2]}, "p_at": at})
    assert found == [({"a": [1, 2]}, at, 1)]  # JSON back as a dict, the time as an aware datetime
    assert not [s for s in executed if "UPDATE" in s], executed  # past SQLAlchemy's execution
    async with store.session() as session:
        stored = await session.get(Application, app.id)
        assert stored is not None and (stored.spec, stored.updated_at) == ({"a": [1, 2]}, at)


async def test_scalar_and_a_statement_that_finds_nothing(store: Store) -> None:
    await stored_application(store, "scalar")
    async with store.transaction() as session:
        assert await direct.scalar(session, _READ, {"p_name": "scalar"}) == "scalar"
        assert await direct.scalar(session, _READ, {"p_name": "absent"}) is None
        assert await direct.rows(session, _RENAME, {"p_id": "absent", "p_spec": {}, "p_at": None}) == []


async def test_parameter_sets_run_once_each(store: Store) -> None:
    for name in ("one", "two", "three"):
        await stored_application(store, name)
    async with store.transaction() as session:
        assert (
            await direct.rows(session, _BUMP, [{"p_name": "one"}, {"p_name": "two"}, {"p_name": "one"}]) == []
        )
    async with store.session() as session:
        stored = await session.execute(select(_apps.c.name, _apps.c.revision))
        revisions = {name: revision for name, revision in stored}
    assert revisions == {"one": 3, "two": 2, "three": 1}


async def test_pending_changes_are_flushed_first(store: Store) -> None:
    async with store.transaction() as session:
        session.add(Application(name="pending", revision=1, spec={"v": 1}))
        found = await direct.rows(session, _READ, {"p_name": "pending"})
        assert [(name, spec) for name, spec, _ in found] == [("pending", {"v": 1})]
        assert isinstance(found[0][2], datetime) and found[0][2].tzinfo is not None


async def test_a_rollback_undoes_what_went_past_sqlalchemy(store: Store) -> None:
    app = await stored_application(store, "undone")
    try:
        async with store.transaction() as session:
            await direct.rows(session, _BUMP, [{"p_name": "undone"}])
            raise RuntimeError("changed my mind")
    except RuntimeError:
        pass
    async with store.session() as session:
        stored = await session.get(Application, app.id)
        assert stored is not None and stored.revision == 1


async def test_orm_statements_go_through_the_session(store: Store) -> None:
    """An ORM statement hands back the session's own objects, on every backend."""
    await stored_application(store, "orm")
    async with store.transaction() as session:
        loaded = await session.scalar(_ORM_READ, {"p_name": "orm"})
        again = await direct.scalar(session, _ORM_READ, {"p_name": "orm"})
        assert again is loaded and isinstance(again, Application)


async def test_a_driver_error_is_sqlalchemys_and_the_transaction_writes_nothing(store: Store) -> None:
    first = await stored_application(store, "first")
    second = await stored_application(store, "second")
    with pytest.raises(IntegrityError) as raised:
        async with store.transaction() as session:
            session.add(Application(name="third", revision=1, spec={}))
            await direct.rows(session, _NAME, {"p_id": second.id, "p_name": "first"})  # taken
    assert "duplicate" in str(raised.value).lower() or "unique" in str(raised.value).lower()
    assert "[parameters:" not in str(raised.value)  # values may be secrets, and messages reach logs
    async with store.session() as session:
        names = set(await session.scalars(select(Application.name)))
    assert names == {"first", "second"}, names
    async with store.transaction() as session:  # the connection is fine afterwards
        await direct.rows(session, _NAME, {"p_id": first.id, "p_name": "renamed"})
        assert await direct.scalar(session, _COUNT, {}) == 2


async def test_a_direct_statement_opens_the_transaction_it_runs_in(store: Store) -> None:
    """The first statement of a transaction may be a direct one: it must not commit on its own."""
    app = await stored_application(store, "opened")
    with pytest.raises(RuntimeError):
        async with store.transaction() as session:
            await direct.rows(session, _NAME, {"p_id": app.id, "p_name": "kept-apart"})
            async with store.session() as other:  # another connection does not see it yet
                assert set(await other.scalars(select(Application.name))) == {"opened"}
            raise RuntimeError("roll it back")
    async with store.session() as session:
        assert set(await session.scalars(select(Application.name))) == {"opened"}


async def test_autocommit_rows_commit_alone_and_name_their_columns(store: Store) -> None:
    if store.dialect != "postgresql":
        pytest.skip("PostgreSQL's (SQLite writes inside the writer's transaction)")
    app = await stored_application(store, "alone")
    rename = update(_apps).where(_apps.c.id == bindparam("p_id")).values(name=bindparam("p_name"))
    found = await direct.autocommit_rows(
        store.engine, rename.returning(_apps.c.name, _apps.c.revision), {"p_id": app.id, "p_name": "done"}
    )
    assert [(row.name, row.revision) for row in found] == [("done", 1)]
    textual = text("SELECT name AS called, revision + 1 AS next FROM applications WHERE id = :p_id")
    assert [
        (r.called, r.next) for r in await direct.autocommit_rows(store.engine, textual, {"p_id": app.id})
    ] == [("done", 2)]
    async with store.session() as session:
        assert await session.scalar(select(Application.name)) == "done"


def _columns(obj: Application) -> dict[str, object]:
    return {prop.key: getattr(obj, prop.key) for prop in object_mapper(obj).column_attrs}


async def test_load_gives_the_object_the_sessions_own_load_would(store: Store) -> None:
    app = await stored_application(store, "loaded")
    async with store.transaction() as session:
        await direct.rows(
            session, _RENAME, {"p_id": app.id, "p_spec": {"a": [1, None]}, "p_at": app.created_at}
        )
    async with store.session() as session:
        expected = _columns(await session.scalar(_ORM_READ, {"p_name": "loaded"}))
    with through_sqlalchemy(store) as executed:
        async with store.transaction() as session:
            loaded = await direct.load(session, _LOCKED, {"p_name": "loaded"})
            assert isinstance(loaded, Application) and _columns(loaded) == expected
            state = inspect(loaded)
            assert state.persistent and not state.modified and not session.dirty
            assert await session.get(Application, app.id) is loaded  # in the identity map: no query
            loaded.revision = 7
            loaded.spec = {"b": 2}
            assert list(session.dirty) == [loaded]
    assert not [s for s in executed if s.startswith("SELECT")], executed  # read past SQLAlchemy
    async with store.session() as session:
        stored = await session.get(Application, app.id)
        assert stored is not None and (stored.revision, stored.spec) == (7, {"b": 2})


async def test_load_finds_nothing_or_what_the_session_holds(store: Store) -> None:
    await stored_application(store, "held")
    async with store.transaction() as session:
        assert await direct.load(session, _LOCKED, {"p_name": "absent"}) is None
        held = await session.scalar(_ORM_READ, {"p_name": "held"})
        held.revision = 3  # unflushed: the load flushes first, and hands back the session's own object
        assert await direct.load(session, _LOCKED, {"p_name": "held"}) is held
        assert held.revision == 3
