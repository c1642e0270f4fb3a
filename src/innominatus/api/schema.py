"""The GraphQL schema: queries, mutations and subscriptions over the services. No business rules here."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry
from graphql import GraphQLError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.extensions import MaskErrors, ParserCache, ValidationCache
from strawberry.scalars import JSON

from innominatus import operations, specs
from innominatus.api.context import Context
from innominatus.api.errors import bad_input, not_found
from innominatus.api.types import (
    Application,
    Provider,
    Resource,
    ResourceState,
    ResourceStateEvent,
    SubmitSpecPayload,
    WorkflowExecution,
    WorkflowStatus,
    WorkflowStepEvent,
    WorkflowStepState,
)
from innominatus.db import models
from innominatus.events import EventFilter, StepFilter, stream
from innominatus.problems import Problem
from innominatus.score import SpecError
from innominatus.states import ResourceState as ResourceStateEnum
from innominatus.states import StepStatus as StepStatusEnum

Info = strawberry.Info[Context, None]


@strawberry.type
class Query:
    @strawberry.field
    def providers(self, info: Info) -> list[Provider]:
        return [Provider.from_model(p) for p in info.context.catalog.providers.values()]

    @strawberry.field
    def provider(self, info: Info, name: str) -> Provider:
        found = info.context.catalog.providers.get(name)
        if found is None:
            raise not_found("provider", name)
        return Provider.from_model(found)

    @strawberry.field
    async def applications(self, info: Info) -> list[Application]:
        async with info.context.store.session() as session:
            rows = await session.scalars(
                select(models.Application)
                .where(models.Application.deleted_at.is_(None))
                .order_by(models.Application.name)
            )
            return [Application.from_row(r) for r in rows]

    @strawberry.field
    async def application(self, info: Info, name: str) -> Application:
        async with info.context.store.session() as session:
            row = await session.scalar(
                select(models.Application).where(
                    models.Application.name == name, models.Application.deleted_at.is_(None)
                )
            )
        if row is None:
            raise not_found("application", name)
        return Application.from_row(row)

    @strawberry.field
    async def resources(
        self,
        info: Info,
        application: str | None = None,
        state: ResourceState | None = None,
        type: str | None = None,
    ) -> list[Resource]:
        query = select(models.Resource).order_by(models.Resource.created_at, models.Resource.name)
        if application is not None:
            query = query.where(models.Resource.application_name == application)
        if state is not None:
            query = query.where(models.Resource.state == ResourceStateEnum(state).value)
        if type is not None:
            query = query.where(models.Resource.type == type)
        async with info.context.store.session() as session:
            return [Resource.from_row(r) for r in await session.scalars(query)]

    @strawberry.field
    async def resource(self, info: Info, id: strawberry.ID) -> Resource:
        async with info.context.store.session() as session:
            row = await session.get(models.Resource, str(id))
        if row is None:
            raise not_found("resource", str(id))
        return Resource.from_row(row)

    @strawberry.field
    async def workflows(
        self, info: Info, application: str | None = None, status: WorkflowStatus | None = None
    ) -> list[WorkflowExecution]:
        query = select(models.WorkflowExecution).order_by(models.WorkflowExecution.started_at)
        if application is not None:
            query = query.where(models.WorkflowExecution.application_name == application)
        if status is not None:
            query = query.where(models.WorkflowExecution.status == str(status.value))
        async with info.context.store.session() as session:
            return [WorkflowExecution.from_row(r) for r in await session.scalars(query)]

    @strawberry.field
    async def workflow(self, info: Info, id: strawberry.ID) -> WorkflowExecution:
        async with info.context.store.session() as session:
            row = await session.get(models.WorkflowExecution, str(id))
        if row is None:
            raise not_found("workflow", str(id))
        return WorkflowExecution.from_row(row)


async def _locked_resource(
    session: AsyncSession, resource_id: str
) -> tuple[models.Application, models.Resource]:
    resource = await session.get(models.Resource, resource_id)
    if resource is None:
        raise not_found("resource", resource_id)
    app = await session.get(models.Application, resource.application_id)
    assert app is not None
    await operations.lock_application(session, app.name)  # racing changes to one app queue up here
    await session.refresh(resource)
    return app, resource


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Submit a Score spec (YAML). Unchanged specs store nothing and run nothing."
    )
    async def submit_spec(self, info: Info, spec: str) -> SubmitSpecPayload:
        try:
            result = await specs.submit(info.context.store, info.context.catalog, spec)
        except SpecError as exc:
            raise bad_input(str(exc), exc.problems) from None
        return SubmitSpecPayload(
            application=Application.from_row(result.application),
            resources=[Resource.from_row(r) for r in result.resources],
            changed=result.changed,
        )

    @strawberry.mutation(
        description="Merge properties into an ACTIVE resource's current ones and run its update workflow."
    )
    async def update_resource(self, info: Info, id: strawberry.ID, properties: JSON) -> Resource:
        if not isinstance(properties, dict):
            raise bad_input("properties must be an object", [Problem("properties", "must be an object")])
        try:
            async with info.context.store.transaction(sequenced=True) as session:
                app, resource = await _locked_resource(session, str(id))
                await operations.update_properties(session, info.context.catalog, app, resource, properties)
                return Resource.from_row(resource)
        except operations.OperationError as exc:
            raise bad_input(str(exc), exc.problems) from None

    @strawberry.mutation(
        description="Delete every resource of an application (dependents first), then the application. "
        "Its resources and executions stay queryable as history."
    )
    async def delete_application(self, info: Info, name: str) -> Application:
        try:
            async with info.context.store.transaction(sequenced=True) as session:
                app = await operations.lock_application(session, name)
                if app is None or app.deleted_at is not None:
                    raise operations.NotFound("application", name)
                await operations.delete_application(session, info.context.catalog, app)
                return Application.from_row(app)
        except operations.NotFound as exc:
            raise not_found(exc.kind, exc.key) from None

    @strawberry.mutation(
        description="Re-run a FAILED resource's last workflow from its first failed step; returns once the "
        "resource has left FAILED."
    )
    async def retry_resource(self, info: Info, id: strawberry.ID) -> Resource:
        try:
            async with info.context.store.transaction(sequenced=True) as session:
                app, resource = await _locked_resource(session, str(id))
                await operations.retry(session, resource, team=app.team)
                return Resource.from_row(resource)
        except operations.OperationError as exc:
            raise bad_input(str(exc), exc.problems) from None


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Each resource state change as the engine makes it. With afterSequence, the stored events "
        "after that sequence come first, so a reconnecting client loses nothing."
    )
    async def resource_state_changed(
        self,
        info: Info,
        application: str | None = None,
        resource_id: strawberry.ID | None = None,
        after_sequence: int | None = None,
    ) -> AsyncGenerator[ResourceStateEvent, None]:
        flt = EventFilter(
            application=application, resource_id=str(resource_id) if resource_id is not None else None
        )
        async for event in stream(info.context.store, flt, after_sequence):
            yield ResourceStateEvent(
                sequence=event.sequence,
                resource_id=strawberry.ID(event.resource_id),
                application=event.application_name,
                from_state=ResourceStateEnum(event.from_state) if event.from_state else None,
                to_state=ResourceStateEnum(event.to_state),
                reason=event.reason,
                at=event.at,
            )

    @strawberry.subscription(
        description="Each step status change and each log line of a workflow run, as they happen (live only)."
    )
    async def workflow_step_changed(
        self, info: Info, workflow_id: strawberry.ID | None = None, application: str | None = None
    ) -> AsyncGenerator[WorkflowStepEvent, None]:
        flt = StepFilter(
            workflow_id=str(workflow_id) if workflow_id is not None else None, application=application
        )
        async for event in info.context.store.hub.steps(flt):
            yield WorkflowStepEvent(
                workflow_id=strawberry.ID(event.workflow_id),
                application=event.application_name,
                step=WorkflowStepState(
                    name=event.step_name, status=StepStatusEnum(event.status), attempts=event.attempts
                ),
                log_line=event.log_line,
                at=event.at,
            )


def is_unexpected(error: GraphQLError) -> bool:
    """Our expected errors are GraphQLErrors with a code; anything else may carry internals (SQL, paths)."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


schema = strawberry.Schema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    extensions=[
        lambda: MaskErrors(should_mask_error=is_unexpected, error_message="internal server error"),
        lambda: ParserCache(maxsize=256),
        lambda: ValidationCache(maxsize=256),
    ],
)
