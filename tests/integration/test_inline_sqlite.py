"""SQLite runs in the loop's own thread (db/inline_sqlite.py): waiting for a lock another connection
holds never stands the loop still, a write that cannot get the lock in time fails whole, and errors
other than a busy database surface at once."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from innominatus.db import database, inline_sqlite, models
from innominatus.store import Store
from tests.integration.test_events import make_resource


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    engine = database.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    await database.upgrade(engine)
    store = Store(engine)
    try:
        yield store
    finally:
        await store.close()


def lock_file(path: str) -> sqlite3.Connection:
    """Another process's view: a connection holding the write lock until it commits."""
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")
    return locker


async def count_ticks(during: asyncio.Future[object]) -> int:
    ticks = 0
    while not during.done():
        ticks += 1
        await asyncio.sleep(0.01)
    return ticks


async def applications(store: Store) -> list[str]:
    async with store.session() as session:
        return list((await session.scalars(select(models.Application.name).order_by("name"))).all())


async def test_a_write_waits_for_the_lock_without_stalling_the_loop(sqlite_store: Store) -> None:
    locker = lock_file(sqlite_store.engine.url.database or "")
    release = threading.Timer(0.5, lambda: (locker.execute("COMMIT"), locker.close()))
    t0 = time.monotonic()
    release.start()
    try:
        write = asyncio.ensure_future(make_resource(sqlite_store, "patient"))
        ticks = await count_ticks(write)
        await write
    finally:
        release.join()
    assert time.monotonic() - t0 >= 0.45, "the write went through while the file was locked"
    assert ticks >= 20, f"the loop stood still while waiting for the lock ({ticks} ticks in 0.5 s)"
    assert await applications(sqlite_store) == ["patient"]


async def test_a_write_that_never_gets_the_lock_fails_whole(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_resource(sqlite_store, "before")
    monkeypatch.setattr(inline_sqlite, "BUSY_TIMEOUT_S", 0.3)
    locker = lock_file(sqlite_store.engine.url.database or "")
    try:
        with pytest.raises(OperationalError, match="database is locked"):
            await make_resource(sqlite_store, "refused")
    finally:
        locker.execute("COMMIT")
        locker.close()
    assert await applications(sqlite_store) == ["before"]
    await make_resource(sqlite_store, "after")  # the store is usable again
    assert await applications(sqlite_store) == ["after", "before"]


async def test_other_errors_surface_at_once(sqlite_store: Store) -> None:
    t0 = time.monotonic()
    with pytest.raises(OperationalError, match="no such table"):
        async with sqlite_store.transaction() as session:
            await (await session.connection()).exec_driver_sql("SELECT * FROM missing_table")
    assert time.monotonic() - t0 < 1.0
