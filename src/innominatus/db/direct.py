"""Statements built once, run on SQLite straight on the sqlite3 connection; on PostgreSQL through the
session as usual.

Why: for the hot statements of a run (its finish, its steps' results, releasing what waited for it)
SQLAlchemy's execution (cache key, execution context, result wrapping, the async adaption) cost
0.3-0.5 ms a statement on the 2-core benchmark machine, SQLite's own work about 0.05 ms. On PostgreSQL
the round trip outweighs all that.

What they keep of `session.execute`: pending changes are flushed first (autoflush); values go through
the same type processors, and rows come back through the same result processors. Only Core statements:
an ORM-enabled UPDATE also refreshes the session's objects, which this does not do (those go through
the session on every backend).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Executable

_SQLITE = "innominatus.direct.sqlite"  # session.info: the transaction's sqlite3 connection
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

    def arguments(self, values: dict[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, process, fixed in self._order:
            value = values.get(name, fixed)
            out.append(value if process is None else process(value))
        return tuple(out)

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(value if p is None else p(value) for p, value in zip(self.results, raw, strict=True))


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
    sqlite = await _sqlite_of(session, statement)
    if sqlite is None:
        result = await session.execute(statement, parameters)
        return [tuple(row) for row in result] if getattr(result, "returns_rows", True) else []
    built = compiled(statement, lambda: statement, session.get_bind().dialect)
    cursor = sqlite.cursor()
    try:
        if isinstance(parameters, list):
            cursor.executemany(built.sql, [built.arguments(values) for values in parameters])
            return []
        cursor.execute(built.sql, built.arguments(parameters))
        return [built.row(raw) for raw in cursor.fetchall()] if cursor.description else []
    finally:
        cursor.close()


async def scalar(session: AsyncSession, statement: Executable, parameters: dict[str, Any]) -> Any:
    """The first column of the first row, or None."""
    found = await rows(session, statement, parameters)
    return found[0][0] if found else None


async def _sqlite_of(session: AsyncSession, statement: Executable) -> sqlite3.Connection | None:
    """The transaction's sqlite3 connection, after an autoflush; None where the session runs it."""
    if session.get_bind().dialect.name != "sqlite" or _orm_enabled(statement):
        return None
    if session.new or session.dirty or session.deleted:
        await session.flush()
    return await sqlite_connection(session)


async def sqlite_connection(session: AsyncSession) -> sqlite3.Connection | None:
    """The sqlite3 connection of the session's transaction (an inline one, db/inline_sqlite.py), or None."""
    sqlite = session.info.get(_SQLITE)
    if sqlite is None:
        connection = await session.connection()
        raw = (await connection.get_raw_connection()).driver_connection
        sqlite = getattr(raw, "sqlite", None)  # the inline connection's (db/inline_sqlite.py)
        if sqlite is None:
            return None
        session.info[_SQLITE] = sqlite
    return sqlite


def _orm_enabled(statement: Executable) -> bool:
    return statement._propagate_attrs.get("compile_state_plugin") == "orm"  # type: ignore[attr-defined]
