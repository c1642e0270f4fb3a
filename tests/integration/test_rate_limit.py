"""The mutation rate limit against the real database: in process on SQLite, shared in `rate_hits` on
PostgreSQL, where two limiters stand for two replicas."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from innominatus.db import models
from innominatus.ratelimit import RateLimiter, SharedRateLimiter, rate_limiter
from innominatus.store import Store


async def test_each_token_gets_the_limit_across_replicas(store: Store) -> None:
    first, second = rate_limiter(store.engine, 3, 60), rate_limiter(store.engine, 3, 60)
    shared = store.dialect == "postgresql"
    assert isinstance(first, SharedRateLimiter if shared else RateLimiter)
    answers = [await (first if i % 2 else second).allow("token-a") for i in range(5)]
    if shared:
        assert answers == [True, True, True, False, False]  # counted together
    else:  # the embedded database serves one process: each limiter counts alone
        assert answers == [True] * 5
        assert not await second.allow("token-a")  # its fourth
    assert await first.allow("token-b")  # another token has its own budget


async def test_windows_nobody_reads_any_more_are_removed(store: Store) -> None:
    if store.dialect != "postgresql":
        pytest.skip("the in-process limiter keeps nothing in the database")
    limiter = SharedRateLimiter(store.engine, 1000, 0.05)
    for _ in range(3):
        await limiter.allow("token-c")
        await asyncio.sleep(0.06)  # a new window each time
    await asyncio.sleep(0.05 * 11)  # past FORGET_AFTER_WINDOWS: the next hit prunes
    await limiter.allow("token-c")
    async with store.session() as session:
        rows = await session.scalar(
            select(func.count()).select_from(models.RateHit).where(models.RateHit.key == "token-c")
        )
    assert rows == 1


async def test_a_hits_quick_commit_leaves_its_connection_durable(store: Store) -> None:
    if store.dialect != "postgresql":
        pytest.skip("the in-process limiter writes nothing")
    one_connection = create_async_engine(store.engine.url, pool_size=1, max_overflow=0)
    try:
        limiter = SharedRateLimiter(one_connection, 1000, 60)
        assert await limiter.allow("token-d")
        # The setting was the hit's own transaction's: the same connection is durable again.
        async with one_connection.connect() as conn:
            assert await conn.scalar(text("SHOW synchronous_commit")) == "on"
    finally:
        await one_connection.dispose()
    async with store.session() as session:
        hits = await session.scalar(select(models.RateHit.hits).where(models.RateHit.key == "token-d"))
    assert hits == 1
