"""An aiosqlite-shaped SQLite connection that runs every call in the event loop's own thread.

aiosqlite runs each call on a worker thread: four hand-offs per statement (cursor, execute, fetch,
close), each a queue put, a wake-up of the loop and a wait for the GIL. SQLite itself runs in-process
and a statement here takes microseconds, so the hand-offs cost more than the work (measured: about a
third of the server's CPU per resource). SQLAlchemy's aiosqlite dialect drives this class as it would
drive aiosqlite (`async_creator`); only the waiting differs.

The one thing that may not run inline is waiting for the write lock: another connection of this
process holds it through an `await`, so a sleeping busy handler would stand the loop still and never
see it released. The connection therefore has no busy handler (timeout 0), and a statement refused
with SQLITE_BUSY is retried after an `asyncio.sleep`, up to the same 30 s the threaded driver waited.
A busy statement did nothing, so running it again is safe; writers begin with BEGIN IMMEDIATE, so
BUSY never comes in the middle of a transaction (WAL readers never get it at all).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

BUSY_TIMEOUT_S = 30.0
_FIRST_NAP_S = 0.0005
_LONGEST_NAP_S = 0.02

T = TypeVar("T")


async def _patiently(call: Callable[[], T]) -> T:
    """`call()`; while SQLite says the database is locked, sleep (without blocking the loop) and retry."""
    deadline: float | None = None
    nap = _FIRST_NAP_S
    while True:
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + BUSY_TIMEOUT_S
            elif now >= deadline:
                raise
            await asyncio.sleep(nap)
            nap = min(nap * 2, _LONGEST_NAP_S)


class InlineCursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        await _patiently(lambda: self._cursor.execute(sql, parameters))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        rows = list(parameters)  # a retry must see them all again
        await _patiently(lambda: self._cursor.executemany(sql, rows))
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        self._cursor.close()


class _RunAtOnce:
    """What SQLAlchemy's dialect uses aiosqlite's request queue for (setting the isolation level):
    run the function now and settle its future."""

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:
            future.set_exception(exc)


class InlineConnection:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection
        self._connection: sqlite3.Connection | None = connection  # None once closed, as in aiosqlite
        self._tx = _RunAtOnce()

    @classmethod
    async def open(cls, database: str, *, uri: bool = False) -> InlineConnection:
        connection = sqlite3.connect(database, timeout=0, check_same_thread=False, uri=uri)
        return cls(connection)

    @property
    def sqlite(self) -> sqlite3.Connection:
        """The sqlite3 connection itself, for writes that skip SQLAlchemy's execution (db/writes.py)."""
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> InlineCursor:  # entered with `async with`, as aiosqlite's is
        return InlineCursor(self._conn.cursor())

    async def commit(self) -> None:
        await _patiently(self._conn.commit)

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()
