"""Running a real engine against a real store, and waiting on what it does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import select

from innominatus.db import models
from innominatus.engine import Engine
from innominatus.events import EventFilter, StateEvent, stream
from innominatus.providers import Catalog
from innominatus.store import Store

FINAL = {"ACTIVE", "FAILED", "DELETED"}


@asynccontextmanager
async def running_engine(store: Store, catalog: Catalog, **kwargs: object) -> AsyncIterator[Engine]:
    engine = Engine(store, catalog, **kwargs)  # type: ignore[arg-type]
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def settle(store: Store, application: str, count: int = 1, timeout: float = 20) -> list[StateEvent]:
    """Every event of `application` until `count` of its resources reached a final state."""
    seen: list[StateEvent] = []
    finals: set[str] = set()

    async def collect() -> None:
        async for event in stream(store, EventFilter(application=application), after_sequence=0):
            seen.append(event)
            if event.to_state in FINAL:
                finals.add(event.resource_id)
                if len(finals) >= count:
                    return

    async with asyncio.timeout(timeout):
        await collect()
    return seen


async def resources(store: Store, application: str, *, opened: bool = True) -> list[models.Resource]:
    """The app's resource rows; with `opened`, secret outputs decrypted (as the owning team sees them)."""
    async with store.session() as session:
        rows = list(
            await session.scalars(
                select(models.Resource)
                .where(models.Resource.application_name == application)
                .order_by(models.Resource.name)
            )
        )
    if opened:
        for row in rows:
            row.outputs = store.box.open(row.outputs)  # detached rows: this never reaches the database
    return rows


async def steps_of(store: Store, execution_id: str) -> list[models.WorkflowStep]:
    async with store.session() as session:
        rows = await session.scalars(
            select(models.WorkflowStep)
            .where(models.WorkflowStep.execution_id == execution_id)
            .order_by(models.WorkflowStep.position)
        )
        return list(rows)


async def execution(store: Store, execution_id: str) -> models.WorkflowExecution:
    async with store.session() as session:
        row = await session.get(models.WorkflowExecution, execution_id)
        assert row is not None
        return row


async def executions_of(store: Store, resource_id: str) -> list[models.WorkflowExecution]:
    """A resource's workflow runs, oldest first."""
    async with store.session() as session:
        rows = await session.scalars(
            select(models.WorkflowExecution)
            .where(models.WorkflowExecution.resource_id == resource_id)
            .order_by(models.WorkflowExecution.started_at)
        )
        return list(rows)
