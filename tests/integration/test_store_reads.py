"""Lists read on SQLite: inline in the loop's thread, but never at the cost of a stalled loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from innominatus.auth import DEV_ADMIN, Authenticator
from innominatus.db import database
from innominatus.providers import Catalog
from innominatus.ratelimit import RateLimiter
from innominatus.service import Services, reads
from innominatus.store import Store
from tests.integration.test_events import make_resource


def services(store: Store) -> Services:
    return Services(store, Catalog([]), Authenticator(store), RateLimiter(10, 1))


async def test_a_locked_sqlite_file_is_read_without_stalling_the_loop(db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("the inline reader is SQLite's")
    store = Store(database.create_engine(db_url))
    await database.upgrade(store.engine)
    await make_resource(store, "locked")
    await store.close()  # its pooled connections would keep the locker out
    store = Store(database.create_engine(db_url))
    # Another process's connection in exclusive locking mode: every other reader gets SQLITE_BUSY
    # until it closes.
    locker = sqlite3.connect(store.engine.url.database, isolation_level=None, check_same_thread=False)
    locker.execute("PRAGMA locking_mode=EXCLUSIVE")
    locker.execute("BEGIN EXCLUSIVE")
    locker.execute("UPDATE resources SET provider = provider")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    release = threading.Timer(0.5, lambda: (locker.execute("COMMIT"), locker.close()))
    release.start()
    try:
        listed = await reads.resources(services(store), DEV_ADMIN, application="locked")
    finally:
        release.join()
        ticker.cancel()
    await store.close()
    assert [r.name for r in listed] == ["db"]
    assert ticks >= 20, f"the loop stood still while the file was locked ({ticks} ticks in 0.5 s)"


async def test_lists_see_what_was_just_committed(store: Store) -> None:
    await make_resource(store, "one", "a")
    assert [r.name for r in await reads.resources(services(store), DEV_ADMIN, application="one")] == ["a"]
    await make_resource(store, "two", "b")
    assert [r.application_name for r in await reads.resources(services(store), DEV_ADMIN)] == ["one", "two"]
