"""The changes callers start: submit a spec, update a resource, delete an application, retry a
resource. Each counts against the caller's mutation budget, checks what the caller may touch, runs in
one transaction and refuses with a ServiceError that changes nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from innominatus import operations, specs
from innominatus.auth import Principal
from innominatus.db import models
from innominatus.problems import Problem
from innominatus.score import MAX_SPEC_BYTES, SpecError
from innominatus.service.context import Services
from innominatus.service.errors import BadInput, Forbidden, NotFound, TooLarge


async def submit(services: Services, caller: Principal, text: str | bytes) -> specs.SubmitResult:
    services.count_change(caller)
    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > MAX_SPEC_BYTES:
        raise TooLarge(f"spec is larger than {MAX_SPEC_BYTES} bytes ({size})")
    try:
        return await specs.submit(
            services.store, services.catalog, text, caller=caller, engine=services.engine
        )
    except SpecError as exc:
        raise BadInput(str(exc), exc.problems) from None
    except specs.Forbidden as exc:
        raise Forbidden(str(exc)) from None


async def update_resource(
    services: Services, caller: Principal, resource_id: str, properties: Any
) -> models.Resource:
    services.count_change(caller)
    if not isinstance(properties, dict):
        raise BadInput("properties must be an object", [Problem("properties", "must be an object")])
    try:
        async with services.store.transaction() as session:
            app, resource = await _locked_resource(session, caller, resource_id)
            await operations.update_properties(session, services.catalog, app, resource, properties)
            return resource
    except operations.OperationError as exc:
        raise BadInput(str(exc), exc.problems) from None


async def delete_application(services: Services, caller: Principal, name: str) -> models.Application:
    services.count_change(caller)
    async with services.store.transaction() as session:
        app = await operations.lock_application(session, name)
        if app is None or app.deleted_at is not None or not caller.can_see(app.team):
            raise NotFound("application", name)
        await operations.delete_application(session, services.catalog, app)
        return app


async def retry_resource(services: Services, caller: Principal, resource_id: str) -> models.Resource:
    services.count_change(caller)
    try:
        async with services.store.transaction() as session:
            _, resource = await _locked_resource(session, caller, resource_id)
            await operations.retry(session, resource)
            return resource
    except operations.OperationError as exc:
        raise BadInput(str(exc), exc.problems) from None


async def _locked_resource(
    session: AsyncSession, caller: Principal, resource_id: str
) -> tuple[models.Application, models.Resource]:
    resource = await session.get(models.Resource, resource_id)
    if resource is None or not caller.can_see(resource.team):
        raise NotFound("resource", resource_id)  # another team's id looks exactly like an unknown one
    app = await session.get(models.Application, resource.application_id)
    assert app is not None
    await operations.lock_application(session, app.name)  # racing changes to one app queue up here
    await session.refresh(resource, with_for_update=True)  # dropped on SQLite, whose write lock we hold
    return app, resource
