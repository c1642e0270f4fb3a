"""The changes callers start: submit a spec, update a resource, delete an application, retry a
resource, cancel a workflow. Each counts against the caller's mutation budget, checks what the caller may touch, runs in
one transaction and refuses with a ServiceError that changes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from innominatus import lifecycle, operations, specs
from innominatus.auth import Principal
from innominatus.db import models
from innominatus.executions import cancel_execution
from innominatus.operations import BUSY
from innominatus.problems import Problem
from innominatus.score import MAX_SPEC_BYTES, SpecError
from innominatus.service.context import Services
from innominatus.service.errors import BadInput, Forbidden, NotFound, TooLarge
from innominatus.states import ResourceState, WorkflowStatus


async def submit(services: Services, caller: Principal, text: str | bytes) -> specs.SubmitResult:
    # The count (on PostgreSQL a round trip) runs while the spec is checked; it is settled before
    # anything is written, and a refusal wins over any problem in the spec, as if it had come first.
    counted = asyncio.ensure_future(services.count_change(caller))
    await asyncio.sleep(0)  # the count's statement goes out now, not after the checks below
    try:
        size = len(text.encode("utf-8") if isinstance(text, str) else text)
        if size > MAX_SPEC_BYTES:
            raise TooLarge(f"spec is larger than {MAX_SPEC_BYTES} bytes ({size})")
        try:
            return await specs.submit(
                services.store,
                services.catalog,
                text,
                caller=caller,
                engine=services.engine,
                before_writing=lambda: counted,
            )
        except SpecError as exc:
            raise BadInput(str(exc), exc.problems) from None
        except specs.Forbidden as exc:
            raise Forbidden(str(exc)) from None
    except BaseException:
        await asyncio.wait([counted])  # settled either way, so its own error is never left unretrieved
        if not counted.cancelled() and (refused := counted.exception()) is not None:
            raise refused from None
        raise


async def update_resource(
    services: Services, caller: Principal, resource_id: str, properties: Any
) -> models.Resource:
    await services.count_change(caller)
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
    await services.count_change(caller)
    async with services.store.transaction() as session:
        app = await operations.lock_application(session, name)
        if app is None or app.deleted_at is not None or not caller.can_see(app.team):
            raise NotFound("application", name)
        await operations.delete_application(session, services.catalog, app)
        return app


async def retry_resource(services: Services, caller: Principal, resource_id: str) -> models.Resource:
    await services.count_change(caller)
    try:
        async with services.store.transaction() as session:
            _, resource = await _locked_resource(session, caller, resource_id)
            await operations.retry(session, resource)
            return resource
    except operations.OperationError as exc:
        raise BadInput(str(exc), exc.problems) from None


async def cancel_workflow(
    services: Services, caller: Principal, workflow_id: str
) -> models.WorkflowExecution:
    """Stop a running workflow: the run is CANCELLED (its engine kills the step's processes at its next
    lease renewal) and its resource FAILED, so `retryResource` can run it again later."""
    await services.count_change(caller)
    async with services.store.transaction() as session:
        run = await session.get(models.WorkflowExecution, workflow_id)
        if run is None or not caller.can_see(run.team):
            raise NotFound("workflow", workflow_id)
        _, resource = await _locked_resource(session, caller, run.resource_id)
        await session.refresh(run, with_for_update=True)  # after the resource: the system's lock order
        if run.status != WorkflowStatus.RUNNING:
            message = f"workflow {workflow_id} is {run.status}; only a RUNNING workflow can be cancelled"
            raise BadInput(message, [Problem("id", f"workflow is {run.status}, not RUNNING")])
        reason = f"cancelled: workflow {run.workflow_name} ({run.id})"
        await cancel_execution(session, run, reason)
        if resource.workflow_execution_id == run.id and resource.state in BUSY:
            await lifecycle.transition(session, resource, ResourceState.FAILED, reason)
        return run


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
