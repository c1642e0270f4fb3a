"""The reads every surface offers, each with its visibility rule (a member sees its team's rows, an
admin all; another team's row looks exactly like an unknown one) and its page limits. GraphQL, REST and
the websocket layer call these and only shape what they return."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import JSON, bindparam, null, select, tuple_

from innominatus.auth import Principal
from innominatus.db import models
from innominatus.executions import steps_in
from innominatus.problems import Problem
from innominatus.providers import Provider
from innominatus.service.context import Services
from innominatus.service.errors import BadInput, NotFound

DEFAULT_PAGE = 100
MAX_PAGE = 1000

_RESOURCE_COLUMNS = tuple(models.Resource.__table__.c)
_RESOURCE_PLAIN_COLUMNS = tuple(c for c in _RESOURCE_COLUMNS if not isinstance(c.type, JSON))
_ALWAYS = frozenset({"id", "state"})  # what making a Resource of a row reads whatever is selected


def page_size(first: int | None) -> int:
    """Lists answer at most `first` items: 100 unless asked, never more than 1000."""
    if first is None:
        return DEFAULT_PAGE
    if not 1 <= first <= MAX_PAGE:
        message = f"must be between 1 and {MAX_PAGE}, got {first}"
        raise BadInput(f"first: {message}", [Problem("first", message)])
    return first


def _unknown_cursor(after: str) -> BadInput:
    message = f"'{after}' is not an item of this list (pass the id of the last item you received)"
    return BadInput(f"after: {message}", [Problem("after", message)])


def _scoped(caller: Principal, query: Any, column: Any) -> Any:
    return query if caller.is_admin else query.where(column == caller.team)


# ------------------------------------------------------------------------------------------- providers


def providers(services: Services, caller: Principal) -> list[Provider]:
    """Every team may read the catalog: it is what they can ask for."""
    return list(services.catalog.providers.values())


def provider(services: Services, caller: Principal, name: str) -> Provider:
    found = services.catalog.providers.get(name)
    if found is None:
        raise NotFound("provider", name)
    return found


# ---------------------------------------------------------------------------------------- applications


async def last_sequence(services: Services, caller: Principal) -> int:
    """The highest event position this server has published (every lower one was published before it):
    a client lists what exists, then subscribes after this position and misses nothing, without
    replaying the whole history. The position is global; what the caller may see is filtered as ever."""
    return await services.store.sequencer.high_water()


async def applications(
    services: Services, caller: Principal, *, first: int | None = None, after: str | None = None
) -> list[models.Application]:
    """By name; `after` is the name of the last application received."""
    a = models.Application
    query = _scoped(caller, select(a).where(a.deleted_at.is_(None)), a.team)
    if after is not None:
        query = query.where(a.name > after)
    query = query.order_by(a.name).limit(page_size(first))
    async with services.store.session() as session:
        return list(await session.scalars(query))


async def application(services: Services, caller: Principal, name: str) -> models.Application:
    async with services.store.session() as session:
        row = await session.scalar(
            select(models.Application).where(
                models.Application.name == name, models.Application.deleted_at.is_(None)
            )
        )
    if row is None or not caller.can_see(row.team):
        raise NotFound("application", name)
    return row


# ------------------------------------------------------------------------------------------- resources


async def resources(
    services: Services,
    caller: Principal,
    *,
    application: str | None = None,
    state: str | None = None,
    type: str | None = None,
    columns: frozenset[str] | None = None,
    first: int | None = None,
    after: str | None = None,
) -> list[models.Resource]:
    """In creation order (then name); `after` is the id of the last resource received.

    Plain rows, not ORM objects: lists are read-only, and rows cost a fraction to build. They have the
    same attribute names, which is all readers use. `columns`: the only columns the caller reads (None:
    all); the other plain ones are NULL and the JSON ones left out (decoding documents and times is most
    of a list's cost when nobody reads them)."""
    limit = page_size(first)
    filters: dict[str, Any] = {
        "team": None if caller.is_admin else caller.team,
        "application_name": application,
        "state": state,
        "type": type,
    }
    parameters = {k: v for k, v in filters.items() if v is not None}
    if after is not None:
        cursor = await _resource_cursor(services, caller, after)
        parameters |= {"after_created_at": cursor[0], "after_name": cursor[1], "after_id": cursor[2]}
    query = _resource_list(columns, after is not None, *(v is not None for v in filters.values()))
    return await services.store.rows(query, {**parameters, "limit": limit})


async def _resource_cursor(services: Services, caller: Principal, after: str) -> tuple[Any, ...]:
    r = models.Resource
    found = await services.store.rows(select(r.created_at, r.name, r.id, r.team).where(r.id == after))
    if not found or not caller.can_see(found[0].team):
        raise _unknown_cursor(after)
    return tuple(found[0][:3])


@functools.cache
def _resource_list(columns: frozenset[str] | None, paged: bool, *filtered: bool) -> Any:
    # Built once per shape, with bound parameters: building and hashing a statement per request cost
    # more than running it.
    r = models.Resource
    if columns is None:
        query = select(*_RESOURCE_COLUMNS)
    else:
        shown = columns | _ALWAYS
        query = select(*(c if c.key in shown else null().label(c.key) for c in _RESOURCE_PLAIN_COLUMNS))
    for wanted, column in zip(filtered, (r.team, r.application_name, r.state, r.type), strict=True):
        if wanted:
            query = query.where(column == bindparam(column.key))
    if paged:
        query = query.where(
            tuple_(r.created_at, r.name, r.id)
            > tuple_(
                bindparam("after_created_at", type_=r.created_at.type),
                bindparam("after_name", type_=r.name.type),
                bindparam("after_id", type_=r.id.type),
            )
        )
    return query.order_by(r.created_at, r.name, r.id).limit(bindparam("limit"))


async def resource(services: Services, caller: Principal, resource_id: str) -> models.Resource:
    async with services.store.session() as session:
        row = await session.get(models.Resource, resource_id)
    if row is None or not caller.can_see(row.team):
        raise NotFound("resource", resource_id)
    return row


# ------------------------------------------------------------------------------------------- workflows


async def workflows(
    services: Services,
    caller: Principal,
    *,
    application: str | None = None,
    status: str | None = None,
    first: int | None = None,
    after: str | None = None,
) -> list[models.WorkflowExecution]:
    """In start order; `after` is the id of the last run received."""
    w = models.WorkflowExecution
    limit = page_size(first)
    query = _scoped(caller, select(w), w.team)
    if application is not None:
        query = query.where(w.application_name == application)
    if status is not None:
        query = query.where(w.status == status)
    async with services.store.session() as session:
        if after is not None:
            cursor = await session.get(w, after)
            if cursor is None or not caller.can_see(cursor.team):
                raise _unknown_cursor(after)
            query = query.where(tuple_(w.started_at, w.id) > tuple_(cursor.started_at, cursor.id))
        return list(await session.scalars(query.order_by(w.started_at, w.id).limit(limit)))


async def workflow(services: Services, caller: Principal, execution_id: str) -> models.WorkflowExecution:
    async with services.store.session() as session:
        row = await session.get(models.WorkflowExecution, execution_id)
    if row is None or not caller.can_see(row.team):
        raise NotFound("workflow", execution_id)
    return row


async def steps(services: Services, execution_ids: list[str]) -> dict[str, list[models.WorkflowStep]]:
    """The steps of several (already visible) executions at once (one query), in order."""
    async with services.store.session() as session:
        return await steps_in(session, execution_ids)
