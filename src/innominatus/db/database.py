"""Engine and session factory for SQLite (embedded default) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import contextlib
import sqlite3
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Engine, event, make_url, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool

from innominatus.db.checkpoints import BACKSTOP_PAGES, Checkpointer
from innominatus.db.inline_sqlite import InlineConnection

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def normalize_url(url: str) -> str:
    """Accept plain `postgresql://` and `sqlite:///` URLs and pick the async drivers for them."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    if parsed.drivername not in ("postgresql+asyncpg", "sqlite+aiosqlite"):
        raise ValueError(
            f"INNOMINATUS_DATABASE_URL: unsupported driver {parsed.drivername!r} "
            "(use sqlite+aiosqlite:///file.db or postgresql+asyncpg://user@host/db)"
        )
    return parsed.render_as_string(hide_password=False)


def asyncpg_dsn(url: URL) -> str:
    """The URL as asyncpg itself takes it (for connections outside SQLAlchemy's pool)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def create_engine(url: str, *, foreign_keys: bool = True, **kwargs: Any) -> AsyncEngine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = _create_sqlite_engine(url, **kwargs)
        _configure_sqlite(engine.sync_engine, foreign_keys=foreign_keys, read_only=False)
        return engine
    # Connections beyond pool_size are closed when handed back, and a new one costs a connect (a
    # PostgreSQL backend started) and its prepared statements. With 30 and 10 more, figure 2 (32 clients
    # and the engine's runs) opened and closed about 40 connections a run; the same 40, all kept, none.
    # No pre-ping: with asyncpg it is three round trips per checkout (begin, select, rollback), more than
    # most transactions here cost. A connection the server dropped is invalidated on its first error;
    # pool_recycle retires connections before typical idle timeouts.
    return create_async_engine(url, pool_size=40, max_overflow=0, pool_recycle=1800, **kwargs)


def _sqlite_database(url: URL) -> tuple[str, bool]:
    """The database a SQLite URL names (`:memory:` when none) and whether it is a `file:` URI."""
    return url.database or ":memory:", str(url.query.get("uri", "")).lower() in ("true", "1")


def _create_sqlite_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """SQLAlchemy's aiosqlite dialect over connections that run in the loop's thread (inline_sqlite.py)."""
    database, uri = _sqlite_database(make_url(url))
    return create_async_engine(url, async_creator=lambda: InlineConnection.open(database, uri=uri), **kwargs)


def read_engine(engine: AsyncEngine) -> AsyncEngine:
    """The engine for read-only sessions. PostgreSQL: the same pool in autocommit, so a read is one
    round trip instead of three (no BEGIN and ROLLBACK around it). SQLite: a second engine whose
    transactions start deferred and cannot write, so reads never queue for the write lock (WAL lets
    them run beside the writer)."""
    if not is_sqlite(engine):
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    reader = _create_sqlite_engine(engine.url.render_as_string(hide_password=False))
    _configure_sqlite(reader.sync_engine, foreign_keys=True, read_only=True)
    return reader


def inline_read_engine(engine: AsyncEngine) -> Engine | None:
    """SQLite only (a file, not `:memory:`): one plain sqlite3 connection for lists read in the event
    loop's own thread. SQLite runs in-process and WAL never makes a reader wait, so a list of a few
    hundred rows costs less read inline than the five thread hand-offs aiosqlite makes for it.
    The loop never interleaves two calls, so one connection serves all. It never waits for a lock (the
    loop would stand still): a busy database raises at once, and the caller reads the ordinary way."""
    if not is_sqlite(engine) or _sqlite_database(engine.url)[0] == ":memory:":
        return None
    url = engine.url.set(drivername="sqlite+pysqlite")
    reader = create_sync_engine(
        url, poolclass=StaticPool, connect_args={"timeout": 0, "check_same_thread": False}
    )
    _configure_sqlite(reader, foreign_keys=True, read_only=True)
    return reader


def checkpointer(engine: AsyncEngine) -> Checkpointer | None:
    """SQLite file only: the thread that checkpoints its write-ahead log (not started)."""
    if not is_sqlite(engine):
        return None
    database, uri = _sqlite_database(engine.url)
    return None if database == ":memory:" else Checkpointer(database, uri=uri)


def _configure_sqlite(engine: Engine, *, foreign_keys: bool, read_only: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so the BEGIN below is what runs.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        fk = "ON" if foreign_keys else "OFF"
        # Every connection runs in the loop's thread: SQLite's own busy handler would sleep there, so it
        # is off, and inline_sqlite waits for a lock with asyncio.sleep instead.
        pragmas = [f"foreign_keys={fk}", "busy_timeout=0"]
        # WAL is a property of the file (the writer sets it); it lets readers run beside the writer.
        # Writers leave checkpoints to a thread of their own (db/checkpoints.py) but as a backstop.
        writer = ["journal_mode=WAL", "synchronous=NORMAL", f"wal_autocheckpoint={BACKSTOP_PAGES}"]
        pragmas += ["query_only=ON"] if read_only else writer
        for pragma in pragmas:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # SQLAlchemy drops FOR UPDATE on SQLite; taking the write lock up front makes every
        # read-then-write transaction (claims, submissions) serialisable without it. Readers need no lock.
        # Straight on the inline connection (a statement through SQLAlchemy costs 0.1-0.3 ms more); only
        # while the lock is taken (SQLITE_BUSY) through SQLAlchemy, whose cursor waits without blocking.
        inline = getattr(conn.connection.driver_connection, "sqlite", None)
        if inline is not None:
            try:
                inline.execute(begin)
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
        conn.exec_driver_sql(begin)


async def close(holder: AsyncSession | AsyncConnection, *, cleanly: bool) -> None:
    """Give a session's or connection's connection back. After a clean end (committed, or a statement
    that ran on its own) closing sends nothing, so it is awaited directly: SQLAlchemy's context managers
    run every close in a task of its own, shielded from cancellation, which cost three turns of the loop
    each (about 5% of the server's CPU under figure 2's load). A close that may roll back keeps that
    protection."""
    if cleanly:
        await holder.close()
    else:
        await holder.__aexit__(None, None, None)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to the newest revision (run at start and by `innominatus db upgrade`)."""
    if is_sqlite(engine):
        # SQLite alters tables by copying them; with foreign keys on, dropping the old copy would
        # cascade-delete every child row. Migrate on a connection without them, then check.
        migrator = create_engine(engine.url.render_as_string(hide_password=False), foreign_keys=False)
        try:
            async with migrator.begin() as conn:
                await conn.run_sync(lambda sync_conn: command.upgrade(_alembic_config(sync_conn), revision))
                broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).fetchall()
                if broken:
                    raise RuntimeError(f"migration left rows with dangling foreign keys: {broken[:5]}")
        finally:
            await migrator.dispose()
        return
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync_conn: command.upgrade(_alembic_config(sync_conn), revision))


# Session-level advisory lock keys (PostgreSQL), fixed numbers so every replica picks the same ones.
STARTUP_LOCK = zlib.crc32(b"innominatus:startup")


@contextlib.asynccontextmanager
async def startup_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """Replicas starting together on one PostgreSQL database take turns here: the first migrates and
    bootstraps the admin token, the others then find both done. SQLite serves one process (embedded.py)."""
    if is_sqlite(engine):
        yield
        return
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": STARTUP_LOCK})
        try:
            yield
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": STARTUP_LOCK})


async def ping(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
