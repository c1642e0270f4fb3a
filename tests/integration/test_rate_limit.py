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
from tests.integration.test_query_counts import counting


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


async def test_hits_at_once_are_counted_together_with_the_answers_of_one_at_a_time(store: Store) -> None:
    """Twenty mutations of one token at once: the first five (of a limit of five) pass, the rest are
    refused, all twenty count, and on PostgreSQL they went to the database as one statement."""
    limiter = rate_limiter(store.engine, 5, 60)
    with counting(store) as statements:
        answers = await asyncio.gather(*(limiter.allow("token-e") for _ in range(20)))
    assert answers == [True] * 5 + [False] * 15
    assert not await limiter.allow("token-e")  # refused hits counted too
    assert await limiter.allow("token-f")
    if store.dialect == "postgresql":
        assert [s.split()[0] for s in statements] == ["WITH"]
        async with store.session() as session:
            hits = await session.scalar(select(models.RateHit.hits).where(models.RateHit.key == "token-e"))
        assert hits == 21
    else:
        assert statements == []


async def test_a_failed_count_fails_every_hit_waiting_for_it(store: Store) -> None:
    if store.dialect != "postgresql":
        pytest.skip("the in-process limiter writes nothing")
    unreachable = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        limiter = SharedRateLimiter(unreachable, 5, 60)
        results = await asyncio.gather(*(limiter.allow("token-g") for _ in range(3)), return_exceptions=True)
    finally:
        await unreachable.dispose()
    assert len(results) == 3 and all(isinstance(r, Exception) for r in results), results
    assert all("127.0.0.1" in str(r) or "connect" in str(r).lower() for r in results), results
