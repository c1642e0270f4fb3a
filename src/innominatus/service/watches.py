"""The live streams a caller can watch: resource state changes (replay, then live) and workflow step
changes (live). Each owns its visibility rule (a member's stream holds its team's events only; watching
another team's resource or run is NOT_FOUND, like an unknown one) and the watch on the caller's token
(revoked or expired, the stream ends with events.Revoked)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

from innominatus.auth import Principal
from innominatus.events import EventFilter, StateEvent, StepEvent, StepFilter, steps, stream
from innominatus.service import reads
from innominatus.service.context import Services

T = TypeVar("T")


async def state_changes(
    services: Services,
    caller: Principal,
    token: str | None,
    *,
    application: str | None = None,
    resource_id: str | None = None,
    after_sequence: int | None = None,
) -> AsyncGenerator[StateEvent, None]:
    if resource_id is not None:
        await reads.resource(services, caller, resource_id)
    flt = EventFilter(application=application, resource_id=resource_id, team=_team(caller))
    watch = services.authenticator.watch(token)
    async for event in _watched(services, watch, stream(services.store, flt, after_sequence, watch=watch)):
        yield event


async def step_changes(
    services: Services,
    caller: Principal,
    token: str | None,
    *,
    workflow_id: str | None = None,
    application: str | None = None,
) -> AsyncGenerator[StepEvent, None]:
    if workflow_id is not None:
        await reads.workflow(services, caller, workflow_id)
    flt = StepFilter(workflow_id=workflow_id, application=application, team=_team(caller))
    watch = services.authenticator.watch(token)
    async for event in _watched(services, watch, steps(services.store, flt, watch=watch)):
        yield event


def _team(caller: Principal) -> str | None:
    """The team whose events the caller may see; None for admins (all teams)."""
    return None if caller.is_admin else caller.team


async def _watched(services: Services, watch: object, events: AsyncIterator[T]) -> AsyncGenerator[T, None]:
    try:
        async for event in events:
            yield event
    finally:
        services.authenticator.unwatch(watch)  # type: ignore[arg-type]
        with contextlib.suppress(Exception):
            await events.aclose()  # type: ignore[attr-defined]
