"""Read access for callers: what a caller may see (their team's rows; admins all), shared by the
GraphQL API and the REST layer so both answer the same."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import JSON, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from innominatus.auth import Principal
from innominatus.db import models
from innominatus.store import Store


class NotVisible(LookupError):
    """Unknown, or another team's: the caller cannot tell which."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} '{key}' not found")
        self.kind = kind
        self.key = key


_RESOURCE_COLUMNS = tuple(models.Resource.__table__.c)
_RESOURCE_PLAIN_COLUMNS = tuple(c for c in _RESOURCE_COLUMNS if not isinstance(c.type, JSON))


def _scoped(caller: Principal, query: Any, column: Any) -> Any:
    return query if caller.is_admin else query.where(column == caller.team)


async def applications(store: Store, caller: Principal) -> list[models.Application]:
    query = _scoped(
        caller,
        select(models.Application).where(models.Application.deleted_at.is_(None)),
        models.Application.team,
    )
    async with store.session() as session:
        return list(await session.scalars(query.order_by(models.Application.name)))


async def application(store: Store, caller: Principal, name: str) -> models.Application:
    async with store.session() as session:
        row = await session.scalar(
            select(models.Application).where(
                models.Application.name == name, models.Application.deleted_at.is_(None)
            )
        )
    if row is None or not caller.can_see(row.team):
        raise NotVisible("application", name)
    return row


async def resources(
    store: Store,
    caller: Principal,
    *,
    application: str | None = None,
    state: str | None = None,
    type: str | None = None,
    documents: bool = True,
) -> list[models.Resource]:
    """Plain rows, not ORM objects: lists are read-only, and rows cost a fraction to build. They have the
    same attribute names, which is all readers use. Without `documents`, the JSON columns are left out
    (decoding them is most of a list's cost when nobody reads them)."""
    filters = {
        "team": None if caller.is_admin else caller.team,
        "application_name": application,
        "state": state,
        "type": type,
    }
    query = _resource_list(documents, *(value is not None for value in filters.values()))
    return await store.rows(query, {k: v for k, v in filters.items() if v is not None})


@functools.cache
def _resource_list(documents: bool, *filtered: bool) -> Any:
    # Built once per shape, with bound parameters: building and hashing a statement per request cost
    # more than running it.
    r = models.Resource
    query = select(*(_RESOURCE_COLUMNS if documents else _RESOURCE_PLAIN_COLUMNS))
    for wanted, column in zip(filtered, (r.team, r.application_name, r.state, r.type), strict=True):
        if wanted:
            query = query.where(column == bindparam(column.key))
    return query.order_by(r.created_at, r.name)


async def resource(store: Store, caller: Principal, resource_id: str) -> models.Resource:
    async with store.session() as session:
        row = await session.get(models.Resource, resource_id)
    if row is None or not caller.can_see(row.team):
        raise NotVisible("resource", resource_id)
    return row


async def workflows(
    store: Store, caller: Principal, *, application: str | None = None, status: str | None = None
) -> list[models.WorkflowExecution]:
    query = _scoped(caller, select(models.WorkflowExecution), models.WorkflowExecution.team)
    if application is not None:
        query = query.where(models.WorkflowExecution.application_name == application)
    if status is not None:
        query = query.where(models.WorkflowExecution.status == status)
    async with store.session() as session:
        return list(await session.scalars(query.order_by(models.WorkflowExecution.started_at)))


async def workflow(store: Store, caller: Principal, execution_id: str) -> models.WorkflowExecution:
    async with store.session() as session:
        row = await session.get(models.WorkflowExecution, execution_id)
    if row is None or not caller.can_see(row.team):
        raise NotVisible("workflow", execution_id)
    return row


async def steps(store: Store, execution_ids: list[str]) -> dict[str, list[models.WorkflowStep]]:
    """The steps of several executions at once (one query), in order."""
    async with store.session() as session:
        return await steps_in(session, execution_ids)


async def steps_in(session: AsyncSession, execution_ids: list[str]) -> dict[str, list[models.WorkflowStep]]:
    """`steps` inside a given session (the engine's claim reads them in its own transaction)."""
    found: dict[str, list[models.WorkflowStep]] = {i: [] for i in execution_ids}
    if execution_ids:
        rows = await session.scalars(
            select(models.WorkflowStep)
            .where(models.WorkflowStep.execution_id.in_(execution_ids))
            .order_by(models.WorkflowStep.execution_id, models.WorkflowStep.position)
        )
        for row in rows:
            found[row.execution_id].append(row)
    return found
