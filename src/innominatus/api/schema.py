"""The GraphQL schema: queries, mutations and subscriptions over the services, each checked against
the caller's team (admins see all). No business rules here."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeVar

import strawberry
from graphql import GraphQLError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.scalars import JSON

from innominatus import auth, operations, queries, specs
from innominatus.api.context import Context
from innominatus.api.errors import bad_input, forbidden, not_found
from innominatus.api.execution import Execution, selects_only
from innominatus.api.guard import Guard, unauthenticated
from innominatus.api.types import (
    ApiToken,
    Application,
    CreatedToken,
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
from innominatus.auth import TokenWatch
from innominatus.db import models
from innominatus.events import EventFilter, Revoked, StepFilter, SubscriberTooSlow, steps, stream
from innominatus.problems import Problem
from innominatus.providers import CatalogError
from innominatus.score import SpecError
from innominatus.states import ResourceState as ResourceStateEnum
from innominatus.states import StepStatus as StepStatusEnum

Info = strawberry.Info[Context, None]
T = TypeVar("T")


def _require_admin(info: Info, action: str = "manage tokens") -> None:
    if not info.context.caller.is_admin:
        raise forbidden(f"only an admin token may {action}")


async def _visible_resource(info: Info, session: AsyncSession, resource_id: str) -> models.Resource:
    row = await session.get(models.Resource, resource_id)
    if row is None or not info.context.caller.can_see(row.team):
        raise not_found("resource", resource_id)  # another team's id looks exactly like an unknown one
    return row


def _visible(error: queries.NotVisible) -> GraphQLError:
    return not_found(error.kind, error.key)


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
        return [
            Application.from_row(r)
            for r in await queries.applications(info.context.store, info.context.caller)
        ]

    @strawberry.field
    async def application(self, info: Info, name: str) -> Application:
        try:
            return Application.from_row(
                await queries.application(info.context.store, info.context.caller, name)
            )
        except queries.NotVisible as exc:
            raise _visible(exc) from None

    @strawberry.field
    async def resources(
        self,
        info: Info,
        application: str | None = None,
        state: ResourceState | None = None,
        type: str | None = None,
    ) -> list[Resource]:
        rows = await queries.resources(
            info.context.store,
            info.context.caller,
            application=application,
            state=ResourceStateEnum(state).value if state is not None else None,
            type=type,
            documents=not selects_only(info, Resource.COLUMN_FIELDS),
        )
        return [Resource.from_row(r) for r in rows]

    @strawberry.field
    async def resource(self, info: Info, id: strawberry.ID) -> Resource:
        try:
            return Resource.from_row(await queries.resource(info.context.store, info.context.caller, str(id)))
        except queries.NotVisible as exc:
            raise _visible(exc) from None

    @strawberry.field
    async def workflows(
        self, info: Info, application: str | None = None, status: WorkflowStatus | None = None
    ) -> list[WorkflowExecution]:
        rows = await queries.workflows(
            info.context.store,
            info.context.caller,
            application=application,
            status=str(status.value) if status is not None else None,
        )
        return [WorkflowExecution.from_row(r) for r in rows]

    @strawberry.field
    async def workflow(self, info: Info, id: strawberry.ID) -> WorkflowExecution:
        try:
            return WorkflowExecution.from_row(
                await queries.workflow(info.context.store, info.context.caller, str(id))
            )
        except queries.NotVisible as exc:
            raise _visible(exc) from None

    @strawberry.field(description="API tokens (admin only); never the tokens themselves.")
    async def tokens(self, info: Info) -> list[ApiToken]:
        _require_admin(info)
        async with info.context.store.session() as session:
            rows = await session.scalars(select(models.Token).order_by(models.Token.created_at))
            return [ApiToken.from_row(r) for r in rows]


async def _locked_resource(
    info: Info, session: AsyncSession, resource_id: str
) -> tuple[models.Application, models.Resource]:
    resource = await _visible_resource(info, session, resource_id)
    app = await session.get(models.Application, resource.application_id)
    assert app is not None
    await operations.lock_application(session, app.name)  # racing changes to one app queue up here
    await session.refresh(resource, with_for_update=True)  # dropped on SQLite, whose write lock we hold
    return app, resource


@strawberry.type
class ReloadProvidersPayload:
    ok: bool
    error: str | None = strawberry.field(description="Why the reload was refused (the old catalog stays).")
    providers: list[Provider]


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Submit a Score spec (YAML). Unchanged specs store nothing and run nothing."
    )
    async def submit_spec(self, info: Info, spec: str) -> SubmitSpecPayload:
        try:
            result = await specs.submit(
                info.context.store,
                info.context.catalog,
                spec,
                caller=info.context.caller,
                engine=info.context.services.engine,
            )
        except SpecError as exc:
            raise bad_input(str(exc), exc.problems) from None
        except specs.Forbidden as exc:
            raise forbidden(str(exc)) from None
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
            async with info.context.store.transaction() as session:
                app, resource = await _locked_resource(info, session, str(id))
                await operations.update_properties(session, info.context.catalog, app, resource, properties)
                return Resource.from_row(resource)
        except operations.OperationError as exc:
            raise bad_input(str(exc), exc.problems) from None

    @strawberry.mutation(
        description="Delete every resource of an application (dependents first), then the application. "
        "Its resources and executions stay queryable as history."
    )
    async def delete_application(self, info: Info, name: str) -> Application:
        async with info.context.store.transaction() as session:
            app = await operations.lock_application(session, name)
            if app is None or app.deleted_at is not None or not info.context.caller.can_see(app.team):
                raise not_found("application", name)
            await operations.delete_application(session, info.context.catalog, app)
            return Application.from_row(app)

    @strawberry.mutation(
        description="Re-run a FAILED resource's last workflow from its first failed step; returns once the "
        "resource has left FAILED."
    )
    async def retry_resource(self, info: Info, id: strawberry.ID) -> Resource:
        try:
            async with info.context.store.transaction() as session:
                _, resource = await _locked_resource(info, session, str(id))
                await operations.retry(session, resource)
                return Resource.from_row(resource)
        except operations.OperationError as exc:
            raise bad_input(str(exc), exc.problems) from None

    @strawberry.mutation(
        description="Re-read every provider source (admin only). A broken source leaves the previous catalog "
        "in place and says why; running workflows are not disturbed."
    )
    async def reload_providers(self, info: Info) -> ReloadProvidersPayload:
        _require_admin(info, "reload providers")
        services = info.context.services
        assert services.reload_catalog is not None
        try:
            catalog = await services.reload_catalog()
        except CatalogError as exc:
            current = services.catalog
            return ReloadProvidersPayload(
                ok=False,
                error=str(exc),
                providers=[Provider.from_model(p) for p in current.providers.values()],
            )
        return ReloadProvidersPayload(
            ok=True, error=None, providers=[Provider.from_model(p) for p in catalog.providers.values()]
        )

    @strawberry.mutation(description="Create an API token (admin only). The token is shown only here, once.")
    async def create_token(
        self,
        info: Info,
        team: str,
        role: str = auth.MEMBER,
        expires_in: str | None = None,
        description: str | None = None,
    ) -> CreatedToken:
        _require_admin(info)
        try:
            expiry = auth.parse_expiry(expires_in)
            async with info.context.store.transaction() as session:
                row, text = await auth.create_token(
                    session, team, role, expires_in=expiry, description=description
                )
        except ValueError as exc:
            field = str(exc).split(":", 1)[0]
            raise bad_input(str(exc), [Problem(field, str(exc).split(": ", 1)[-1])]) from None
        return CreatedToken(token=text, info=ApiToken.from_row(row))

    @strawberry.mutation(description="Revoke an API token (admin only); it stops working at once.")
    async def revoke_token(self, info: Info, id: strawberry.ID) -> ApiToken:
        _require_admin(info)
        async with info.context.store.transaction() as session:
            row = await session.get(models.Token, str(id))
            if row is None:
                raise not_found("token", str(id))
            row.revoked_at = row.revoked_at or models.utcnow()
            return ApiToken.from_row(row)


def _ended(exc: Exception) -> GraphQLError:
    """Why a live subscription ended, as the error its client receives."""
    if isinstance(exc, Revoked):
        return unauthenticated()
    assert isinstance(exc, SubscriberTooSlow)
    extensions: dict[str, Any] = {"code": "SUBSCRIBER_TOO_SLOW"}
    if exc.after_sequence is not None:
        extensions["afterSequence"] = exc.after_sequence
    return GraphQLError(str(exc), extensions=extensions)


async def _live(info: Info, events: AsyncIterator[T], watch: TokenWatch | None) -> AsyncGenerator[T, None]:
    try:
        async for event in events:
            yield event
    except (Revoked, SubscriberTooSlow) as exc:
        raise _ended(exc) from None
    finally:
        info.context.services.authenticator.unwatch(watch)
        with contextlib.suppress(Exception):
            await events.aclose()  # type: ignore[attr-defined]


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Each resource state change as the engine makes it. With afterSequence, the stored events "
        "after that sequence come first, so a reconnecting client loses nothing. A subscriber that falls too "
        "far behind is ended with SUBSCRIBER_TOO_SLOW and the afterSequence to resume from."
    )
    async def resource_state_changed(
        self,
        info: Info,
        application: str | None = None,
        resource_id: strawberry.ID | None = None,
        after_sequence: int | None = None,
    ) -> AsyncGenerator[ResourceStateEvent, None]:
        if info.context.principal is None:
            raise unauthenticated()
        if resource_id is not None:
            try:
                await queries.resource(info.context.store, info.context.caller, str(resource_id))
            except queries.NotVisible as exc:
                raise _visible(exc) from None
        flt = EventFilter(
            application=application,
            resource_id=str(resource_id) if resource_id is not None else None,
            team=info.context.team_filter,
        )
        watch = info.context.services.authenticator.watch(info.context.token)
        events = stream(info.context.store, flt, after_sequence, watch=watch)
        async for event in _live(info, events, watch):
            yield ResourceStateEvent.of(event)

    @strawberry.subscription(
        description="Each step status change and each log line of a workflow run, as they happen (live only)."
    )
    async def workflow_step_changed(
        self, info: Info, workflow_id: strawberry.ID | None = None, application: str | None = None
    ) -> AsyncGenerator[WorkflowStepEvent, None]:
        if info.context.principal is None:
            raise unauthenticated()
        if workflow_id is not None:
            try:
                await queries.workflow(info.context.store, info.context.caller, str(workflow_id))
            except queries.NotVisible as exc:
                raise _visible(exc) from None
        flt = StepFilter(
            workflow_id=str(workflow_id) if workflow_id is not None else None,
            application=application,
            team=info.context.team_filter,
        )
        watch = info.context.services.authenticator.watch(info.context.token)
        async for event in _live(info, steps(info.context.store, flt, watch=watch), watch):
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


# The limits' validation rules are built once: ValidationCache keys on the rule classes, and the limiter
# extensions make new classes per instance, so per-request instances would never hit the cache.
_LIMIT_RULES = [
    *QueryDepthLimiter(max_depth=10).validation_rules,
    *MaxAliasesLimiter(max_alias_count=30).validation_rules,
]


def make_schema(*, introspection: bool = True) -> strawberry.Schema:
    extensions: list[Any] = [
        Guard,
        lambda: MaskErrors(should_mask_error=is_unexpected, error_message="internal server error"),
        lambda: AddValidationRules(_LIMIT_RULES),
        lambda: MaxTokensLimiter(max_token_count=2000),
        lambda: ParserCache(maxsize=256),
        lambda: ValidationCache(maxsize=256),
    ]
    if not introspection:
        extensions.append(DisableIntrospection)
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        execution_context_class=Execution,
    )


schema = make_schema()  # what `strawberry export-schema innominatus.api.schema:schema` prints
