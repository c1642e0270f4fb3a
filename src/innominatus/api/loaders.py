"""DataLoaders for nested fields: each kind of related row is read once per batch of parents (one query
for all the `steps` of a list of workflows, not one per workflow). Visibility is the parent's: a nested
row belongs to the same application, so to the same team."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy import select
from strawberry.dataloader import DataLoader

from innominatus.db import models
from innominatus.executions import steps_in
from innominatus.store import Store

K = TypeVar("K")
R = TypeVar("R")


def _grouped(keys: Sequence[K], rows: Iterable[R], key_of: Any) -> list[list[R]]:
    found: dict[K, list[R]] = {k: [] for k in keys}
    for row in rows:
        found[key_of(row)].append(row)
    return [found[k] for k in keys]


class Loaders:
    """One set per request. `cache=False` for a websocket connection, whose context outlives operations:
    loads in one tick are still batched, but nothing is kept to go stale."""

    def __init__(self, store: Store, *, cache: bool = True) -> None:
        self.store = store
        self.resource = DataLoader(self._resources, cache=cache)
        self.execution = DataLoader(self._executions, cache=cache)
        self.app_resources = DataLoader(self._app_resources, cache=cache)
        self.steps = DataLoader(self._steps, cache=cache)
        self.transitions = DataLoader(self._transitions, cache=cache)

    async def _by_id(self, model: Any, keys: Sequence[str]) -> list[Any]:
        async with self.store.session() as session:
            rows = {r.id: r for r in await session.scalars(select(model).where(model.id.in_(set(keys))))}
        return [rows.get(k) for k in keys]

    async def _resources(self, keys: Sequence[str]) -> list[models.Resource | None]:
        return await self._by_id(models.Resource, keys)

    async def _executions(self, keys: Sequence[str]) -> list[models.WorkflowExecution | None]:
        return await self._by_id(models.WorkflowExecution, keys)

    async def _children(self, keys: Sequence[str], parent: Any, *order: Any) -> list[list[Any]]:
        """The rows whose `parent` column holds each key, in `order`, grouped by key."""
        async with self.store.session() as session:
            rows = await session.scalars(select(parent.class_).where(parent.in_(set(keys))).order_by(*order))
            return _grouped(keys, rows, lambda row: getattr(row, parent.key))

    async def _app_resources(self, keys: Sequence[str]) -> list[list[models.Resource]]:
        """Every resource of each application (DELETED ones too), in creation order."""
        r = models.Resource
        return await self._children(keys, r.application_id, r.created_at, r.name)

    async def _steps(self, keys: Sequence[str]) -> list[list[models.WorkflowStep]]:
        async with self.store.session() as session:
            found = await steps_in(session, list(keys))
        return [found[k] for k in keys]

    async def _transitions(self, keys: Sequence[str]) -> list[list[models.Event]]:
        """A resource's state changes are its events, in the order they were made."""
        e = models.Event
        return await self._children(keys, e.resource_id, e.id)
