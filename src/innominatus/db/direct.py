"""Statements built once, run straight on the driver's connection: SQLite's sqlite3 connection, or
PostgreSQL's asyncpg connection inside the session's transaction.

Why: for the hot statements of a run (its finish, its steps' results, releasing what waited for it)
SQLAlchemy's execution (cache key, execution context, result wrapping, the async adaption) cost
0.3-0.5 ms of CPU a statement on the 2-core benchmark machine, SQLite's own work about 0.05 ms. On
PostgreSQL a Core statement through the session cost 0.50 ms of the server's CPU, asyncpg's own
`fetch` 0.15 ms; under load the server's one core is what limits.

What they keep of `session.execute`: pending changes are flushed first (autoflush); the transaction has
begun (on PostgreSQL its BEGIN is sent as SQLAlchemy would send it, before the first statement); values
go through the same type processors, rows come back through the same result processors, and a driver
error is raised as SQLAlchemy's (IntegrityError, OperationalError, ...). Only Core statements: an
ORM-enabled UPDATE also refreshes the session's objects, which this does not do (those go through the
session on every backend).
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from sqlalchemy import Select, inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Mapper, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.sql import Executable

from innominatus.db.database import close

_ADAPTION = "innominatus.direct.adaption"  # session.info: (transaction, its DB-API adaption)
_KEPT = 256  # compiled statements: a handful of constants and write shapes, so this is only a backstop


class Compiled:
    """A statement compiled once for a dialect: building its cache key on every run cost more than
    running it. `arguments` puts a dict of values in the statement's positional order, processed."""

    def __init__(self, statement: Any, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        processors = compiled._bind_processors
        # (name, processor, the value fixed in the statement itself, e.g. a status it sets)
        self._order = [
            (name, processors.get(name), compiled.params.get(name)) for name in compiled.positiontup or ()
        ]
        self.results = [
            column.type._cached_result_processor(dialect, None) for column in compiled._result_columns
        ]
        self._names = tuple(column.keyname for column in compiled._result_columns)
        self._record: Any = None

    def arguments(self, values: dict[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, process, fixed in self._order:
            value = values.get(name, fixed)
            out.append(value if process is None else process(value))
        return tuple(out)

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        if not self.results:  # textual SQL without declared columns: the driver's values, as SQLAlchemy
            return tuple(raw)
        return tuple(value if p is None else p(value) for p, value in zip(self.results, raw, strict=True))

    def named(self, raw: Any) -> Any:
        """A row whose columns are also attributes, as a Core result's rows are (`raw`: an asyncpg
        record, which knows its column names when the statement did not declare them)."""
        if self._record is None:
            names = self._names or tuple(raw.keys())
            self._record = namedtuple("Record", names, rename=True)  # type: ignore[misc]
        return self._record._make(self.row(raw))


_compiled: dict[tuple[str, Hashable], Compiled] = {}


def compiled(key: Hashable, build: Callable[[], Any], dialect: Any) -> Compiled:
    """The statement `build()` makes, compiled for `dialect` once per `key` (a statement built once, or
    the shape of one: db/writes.py)."""
    found = _compiled.get((dialect.name, key))
    if found is None:
        if len(_compiled) >= _KEPT:
            _compiled.clear()
        found = _compiled[(dialect.name, key)] = Compiled(build(), dialect)
    return found


async def rows(
    session: AsyncSession, statement: Executable, parameters: dict[str, Any] | list[dict[str, Any]]
) -> list[tuple[Any, ...]]:
    """The statement's rows (none for a DML statement without RETURNING). A list of parameter sets runs
    it once for each (no RETURNING then)."""
    found = None if _orm_enabled(statement) else await _on_driver(session, statement, parameters)
    if found is None:
        result = await session.execute(statement, parameters)
        return [tuple(row) for row in result] if getattr(result, "returns_rows", True) else []
    return found


async def scalar(session: AsyncSession, statement: Executable, parameters: dict[str, Any]) -> Any:
    """The first column of the first row, or None."""
    found = await rows(session, statement, parameters)
    return found[0][0] if found else None


async def load(session: AsyncSession, statement: Select[Any], parameters: dict[str, Any]) -> Any:
    """The first object an ORM `select(Entity)` finds, or None, as `session.scalar` gives it: persistent,
    unchanged, in the identity map, changes to it tracked. The row is read on the driver (an ORM load
    cost 0.7-0.9 ms of CPU, most of it its bookkeeping). An object the session holds already is left to
    the session's own load, whose rules for refreshing it apply."""
    entity = _entity(statement)
    found = await _on_driver(session, statement, parameters)
    if found is None:
        return await session.scalar(statement, parameters)
    if not found:
        return None
    mapper, keys, primary = entity
    values = dict(zip(keys, found[0], strict=True))
    if mapper.identity_key_from_primary_key([values[k] for k in primary]) in session.identity_map:
        return await session.scalar(statement, parameters)
    obj = mapper.class_manager.new_instance()
    instance_state(obj).dict.update(values)
    make_transient_to_detached(obj)  # as loaded: the values are its committed state, no history
    session.add(obj)
    return obj


_entities: dict[int, tuple[Select[Any], tuple[Mapper[Any], tuple[str, ...], tuple[str, ...]]]] = {}


def _entity(statement: Select[Any]) -> tuple[Mapper[Any], tuple[str, ...], tuple[str, ...]]:
    """The mapper of `select(Entity)`, its attribute keys in the statement's column order, and the keys of
    its primary key."""
    found = _entities.get(id(statement))
    if found is None or found[0] is not statement:
        if len(_entities) >= _KEPT:  # statements built once: a backstop, as for `compiled`
            _entities.clear()
        mapper = inspect(statement.column_descriptions[0]["entity"])
        keys = tuple(mapper.get_property_by_column(column).key for column in statement.selected_columns)
        primary = tuple(mapper.get_property_by_column(column).key for column in mapper.primary_key)
        found = _entities[id(statement)] = (statement, (mapper, keys, primary))
    return found[1]


async def _on_driver(
    session: AsyncSession, statement: Executable, parameters: dict[str, Any] | list[dict[str, Any]]
) -> list[tuple[Any, ...]] | None:
    """The statement's rows, run on the driver's connection; None where the session must run it."""
    if session.new or session.dirty or session.deleted:
        await session.flush()
    dialect = session.get_bind().dialect
    built = compiled(statement, lambda: statement, dialect)
    if dialect.name == "postgresql":
        return await _asyncpg_rows(await _asyncpg_of(session), built, parameters)
    sqlite = await sqlite_connection(session)
    if sqlite is None:  # not an inline connection (a test's own engine, say)
        return None
    cursor = sqlite.cursor()
    try:
        if isinstance(parameters, list):
            cursor.executemany(built.sql, [built.arguments(values) for values in parameters])
            return []
        cursor.execute(built.sql, built.arguments(parameters))
        return [built.row(raw) for raw in cursor.fetchall()] if cursor.description else []
    except sqlite3.Error as error:
        raise _as_sqlalchemy(error, built.sql, sqlite3.Error) from error
    finally:
        cursor.close()


async def driver_rows(
    session: AsyncSession, sql: str, arguments: Sequence[Any], *, alone: bool = False
) -> list[Any]:
    """PostgreSQL: already compiled SQL with its processed arguments, in the session's transaction; the
    driver's own records (db/writes.py). `alone`: the statement is all of the transaction, which has not
    begun (`began`): it runs as a transaction of its own, with no BEGIN or COMMIT round trip."""
    adaption = await _adaption_of(session) if alone else await _asyncpg_of(session)
    return await _fetch(adaption, sql, arguments)


async def began(session: AsyncSession) -> bool:
    """PostgreSQL: whether the session's transaction has sent its BEGIN (a statement has run in it)."""
    return (await _adaption_of(session))._transaction is not None


async def autocommit_rows(
    engine: AsyncEngine, statement: Executable, parameters: dict[str, Any]
) -> list[Any]:
    """PostgreSQL: a statement that is a transaction of its own, on a pooled connection (no BEGIN or
    COMMIT round trips, no isolation level set and reset); rows with the columns as attributes."""
    built = compiled(statement, lambda: statement, engine.dialect)
    connection = await engine.connect().start()
    cleanly = False
    try:
        adaption = (await connection.get_raw_connection()).dbapi_connection
        records = await _fetch(adaption, built.sql, built.arguments(parameters))
        cleanly = True
    finally:
        await close(connection, cleanly=cleanly)
    return [built.named(record) for record in records]


async def _asyncpg_rows(
    adaption: Any, built: Compiled, parameters: dict[str, Any] | list[dict[str, Any]]
) -> list[tuple[Any, ...]]:
    if isinstance(parameters, list):
        for values in parameters:
            await _fetch(adaption, built.sql, built.arguments(values))
        return []
    return [built.row(record) for record in await _fetch(adaption, built.sql, built.arguments(parameters))]


async def _fetch(adaption: Any, sql: str, arguments: Sequence[Any]) -> list[Any]:
    try:
        return await adaption._connection.fetch(sql, *arguments)
    except Exception as error:
        try:
            adaption._handle_exception(error)  # raises the DB-API error SQLAlchemy would have seen
        except adaption.dbapi.Error as translated:
            raise _as_sqlalchemy(translated, sql, adaption.dbapi.Error) from error
        raise


def _as_sqlalchemy(error: Exception, sql: str, base: type[Exception]) -> DBAPIError:
    """A driver's error as SQLAlchemy raises it (IntegrityError, OperationalError, ...); parameters
    hidden: they may hold secrets, and messages reach logs."""
    return DBAPIError.instance(sql, None, error, base, hide_parameters=True)


async def _asyncpg_of(session: AsyncSession) -> Any:
    """The asyncpg adaption of the session's transaction, its BEGIN sent (SQLAlchemy sends it lazily,
    before the first statement; a statement sent here first would otherwise commit on its own)."""
    adaption = await _adaption_of(session)
    if adaption._transaction is None:
        await adaption._start_transaction()
    return adaption


async def sqlite_connection(session: AsyncSession) -> sqlite3.Connection | None:
    """The sqlite3 connection of the session's transaction (an inline one, db/inline_sqlite.py), or None."""
    return getattr((await _adaption_of(session))._connection, "sqlite", None)


async def _adaption_of(session: AsyncSession) -> Any:
    """The DB-API adaption SQLAlchemy drives for the session's transaction; looked up once per
    transaction (a later transaction of the same session may have another connection)."""
    transaction = session.sync_session.get_transaction()
    found = session.info.get(_ADAPTION)
    if found is not None and transaction is not None and found[0] is transaction:
        return found[1]
    connection = await session.connection()
    adaption = (await connection.get_raw_connection()).dbapi_connection
    session.info[_ADAPTION] = (session.sync_session.get_transaction(), adaption)
    return adaption


def _orm_enabled(statement: Executable) -> bool:
    return statement._propagate_attrs.get("compile_state_plugin") == "orm"  # type: ignore[attr-defined]
