"""SQLite's write-ahead log is checkpointed by a thread of its own (db/checkpoints.py), never inside a
commit in the event loop's thread, and it stays bounded under steady writes."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from sqlalchemy import text

from innominatus.db import database
from innominatus.db.checkpoints import BACKSTOP_PAGES, Checkpointer
from innominatus.store import Store
from tests.integration.test_events import make_resource

PAGE = 4096


def write_steadily(path: Path, rows: int) -> int:
    """A writer as the server's are (checkpoints only as a backstop, no busy handler: a busy database
    is tried again after a nap; some work between one transaction and the next), committing row after
    row; the largest the log was, looked at every 100 commits (closing the last connection removes it)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
    conn.execute("CREATE TABLE IF NOT EXISTS filler (id INTEGER PRIMARY KEY, body BLOB)")
    largest = 0
    for i in range(rows):
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError:
                time.sleep(0.0005)
        conn.execute("INSERT INTO filler (body) VALUES (randomblob(3000))")
        conn.execute("COMMIT")
        time.sleep(0.0003)
        if i % 100 == 99:
            largest = max(largest, wal_bytes(path))
    conn.close()
    return largest


def wal_bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_without_checkpoints_the_log_grows_with_every_commit(tmp_path: Path) -> None:
    assert write_steadily(tmp_path / "alone.db", 3000) > 3000 * PAGE


def test_the_checkpointer_keeps_the_log_bounded_and_copies_it_into_the_database(tmp_path: Path) -> None:
    path = tmp_path / "checkpointed.db"
    write_steadily(path, 1)  # a WAL database, as the server's is before its store starts
    checkpoints = Checkpointer(str(path), interval=0.01, restart_pages=200)
    checkpoints.start()
    try:
        largest = write_steadily(path, 3000)
        assert path.stat().st_size > 3000 * 3000  # copied into the database file while writing
    finally:
        checkpoints.stop()
    assert checkpoints.checkpoints > 0
    # Bounded: the restart bound plus what arrives between two passes, far below 3,000 rows' pages.
    assert largest < 1500 * PAGE
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM filler").fetchone() == (3001,)
    assert not any(t.name == "innominatus-wal-checkpoints" for t in threading.enumerate())


async def test_a_store_checkpoints_in_its_own_thread_and_its_writers_never_do(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    engine = database.create_engine(f"sqlite+aiosqlite:///{path}")
    await database.upgrade(engine)
    store = Store(engine)
    try:
        async with store.transaction() as session:
            assert (await session.scalar(text("PRAGMA wal_autocheckpoint"))) == BACKSTOP_PAGES
        for i in range(20):
            await make_resource(store, f"r{i}")
        for _ in range(200):  # a pass every 50 ms
            if store._checkpoints is not None and store._checkpoints.checkpoints:
                break
            await asyncio.sleep(0.01)
        assert any(t.name == "innominatus-wal-checkpoints" for t in threading.enumerate())
    finally:
        await store.close()
    assert not any(t.name == "innominatus-wal-checkpoints" for t in threading.enumerate())
    assert store._checkpoints is not None and store._checkpoints.checkpoints > 0


def test_no_checkpointer_for_postgresql_or_memory() -> None:
    assert database.checkpointer(database.create_engine("sqlite+aiosqlite:///:memory:")) is None
    assert database.checkpointer(database.create_engine("postgresql+asyncpg://u@h/db")) is None
