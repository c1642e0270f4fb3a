"""The GraphQL schema: queries, mutations and subscriptions over the services, each checked against
the caller's team (admins see all). No business rules here."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    DisableIntrospection,
    MaskErrors,
    MaxAliasesLimiter,
    QueryDepthLimiter,
)
from strawberry.scalars import JSON

from innominatus import auth
from innominatus.api.context import Context
from innominatus.api.cost import QueryCost
from innominatus.api.execution import Execution, selected_columns
from innominatus.api.guard import guard_with, unauthenticated
from innominatus.api.types import (
    ApiToken,
    Application,
    CreatedToken,
    Graph,
    GraphEdge,
    GraphNode,
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
from innominatus.events import Revoked, SubscriberTooSlow
from innominatus.service import ServiceError, admin, changes, reads, watches
from innominatus.service import graph as graphs
from innominatus.states import ResourceState as ResourceStateEnum
from innominatus.states import StepStatus as StepStatusEnum

Info = strawberry.Info[Context, None]
T = TypeVar("T")


PAGE = (
    "At most `first` items (default 100, at most 1000), after the one whose id is `after` (pass the "
    "last id of the previous page)."
)


@strawberry.type
class Query:
    @strawberry.field
    def providers(self, info: Info) -> list[Provider]:
        return [Provider.from_model(p) for p in reads.providers(info.context.services, info.context.caller)]

    @strawberry.field
    def provider(self, info: Info, name: str) -> Provider:
        return Provider.from_model(reads.provider(info.context.services, info.context.caller, name))

    @strawberry.field(
        description="The highest event position published so far (0: none yet). Read it, list what exists, "
        "then subscribe to `resourceStateChanged(afterSequence:)` with it: every later change arrives, "
        "without replaying the whole history."
    )
    async def last_sequence(self, info: Info) -> int:
        return await reads.last_sequence(info.context.services, info.context.caller)

    @strawberry.field(
        description=PAGE.replace("whose id is", "whose name is").replace("last id", "last name")
    )
    async def applications(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> list[Application]:
        rows = await reads.applications(info.context.services, info.context.caller, first=first, after=after)
        return [Application.from_row(r) for r in rows]

    @strawberry.field
    async def application(self, info: Info, name: str) -> Application:
        return Application.from_row(await reads.application(info.context.services, info.context.caller, name))

    @strawberry.field(description=PAGE)
    async def resources(
        self,
        info: Info,
        application: str | None = None,
        state: ResourceState | None = None,
        type: str | None = None,
        first: int | None = None,
        after: strawberry.ID | None = None,
    ) -> list[Resource]:
        rows = await reads.resources(
            info.context.services,
            info.context.caller,
            application=application,
            state=ResourceStateEnum(state).value if state is not None else None,
            type=type,
            columns=selected_columns(info, Resource.COLUMNS),
            first=first,
            after=str(after) if after is not None else None,
        )
        return [Resource.from_row(r) for r in rows]

    @strawberry.field
    async def resource(self, info: Info, id: strawberry.ID) -> Resource:
        return Resource.from_row(await reads.resource(info.context.services, info.context.caller, str(id)))

    @strawberry.field(description=PAGE)
    async def workflows(
        self,
        info: Info,
        application: str | None = None,
        status: WorkflowStatus | None = None,
        first: int | None = None,
        after: strawberry.ID | None = None,
    ) -> list[WorkflowExecution]:
        rows = await reads.workflows(
            info.context.services,
            info.context.caller,
            application=application,
            status=str(status.value) if status is not None else None,
            first=first,
            after=str(after) if after is not None else None,
        )
        return [WorkflowExecution.from_row(r) for r in rows]

    @strawberry.field
    async def workflow(self, info: Info, id: strawberry.ID) -> WorkflowExecution:
        return WorkflowExecution.from_row(
            await reads.workflow(info.context.services, info.context.caller, str(id))
        )

    @strawberry.field(
        description="Application → resources → provider → workflow, and resource dependencies, for one "
        "application or every visible one; also as Mermaid and DOT text."
    )
    async def graph(self, info: Info, application: str | None = None) -> Graph:
        found = await graphs.graph(info.context.services, info.context.caller, application)
        return Graph(
            nodes=[GraphNode(id=strawberry.ID(n.id), kind=n.kind, label=n.label) for n in found.nodes],
            edges=[
                GraphEdge(source=strawberry.ID(e.source), target=strawberry.ID(e.target), label=e.label)
                for e in found.edges
            ],
            mermaid=graphs.mermaid(found),
            dot=graphs.dot(found),
        )

    @strawberry.field(description="API tokens (admin only); never the tokens themselves.")
    async def tokens(self, info: Info) -> list[ApiToken]:
        return [ApiToken.from_row(r) for r in await admin.tokens(info.context.services, info.context.caller)]


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
        result = await changes.submit(info.context.services, info.context.caller, spec)
        return SubmitSpecPayload(
            application=Application.from_row(result.application),
            resources=[Resource.from_row(r) for r in result.resources],
            changed=result.changed,
        )

    @strawberry.mutation(
        description="Merge properties into an ACTIVE resource's current ones and run its update workflow."
    )
    async def update_resource(self, info: Info, id: strawberry.ID, properties: JSON) -> Resource:
        return Resource.from_row(
            await changes.update_resource(info.context.services, info.context.caller, str(id), properties)
        )

    @strawberry.mutation(
        description="Delete every resource of an application (dependents first), then the application. "
        "Its resources and executions stay queryable as history."
    )
    async def delete_application(self, info: Info, name: str) -> Application:
        return Application.from_row(
            await changes.delete_application(info.context.services, info.context.caller, name)
        )

    @strawberry.mutation(
        description="Re-run a FAILED resource's last workflow from its first failed step; returns once the "
        "resource has left FAILED."
    )
    async def retry_resource(self, info: Info, id: strawberry.ID) -> Resource:
        return Resource.from_row(
            await changes.retry_resource(info.context.services, info.context.caller, str(id))
        )

    @strawberry.mutation(
        description="Stop a RUNNING workflow: it becomes CANCELLED (its step's processes are killed within "
        "seconds) and its resource FAILED, so retryResource can run it again."
    )
    async def cancel_workflow(self, info: Info, id: strawberry.ID) -> WorkflowExecution:
        return WorkflowExecution.from_row(
            await changes.cancel_workflow(info.context.services, info.context.caller, str(id))
        )

    @strawberry.mutation(
        description="Re-read every provider source (admin only). A broken source leaves the previous catalog "
        "in place and says why; running workflows are not disturbed."
    )
    async def reload_providers(self, info: Info) -> ReloadProvidersPayload:
        catalog, refused = await admin.reload_providers(info.context.services, info.context.caller)
        return ReloadProvidersPayload(
            ok=refused is None,
            error=refused,
            providers=[Provider.from_model(p) for p in catalog.providers.values()],
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
        row, text = await admin.create_token(
            info.context.services, info.context.caller, team, role, expires_in, description
        )
        return CreatedToken(token=text, info=ApiToken.from_row(row))

    @strawberry.mutation(description="Revoke an API token (admin only); it stops working at once.")
    async def revoke_token(self, info: Info, id: strawberry.ID) -> ApiToken:
        return ApiToken.from_row(
            await admin.revoke_token(info.context.services, info.context.caller, str(id))
        )


def _ended(exc: Exception) -> GraphQLError:
    """Why a live subscription ended, as the error its client receives."""
    if isinstance(exc, Revoked):
        return unauthenticated()
    assert isinstance(exc, SubscriberTooSlow)
    extensions: dict[str, Any] = {"code": "SUBSCRIBER_TOO_SLOW"}
    if exc.after_sequence is not None:
        extensions["afterSequence"] = exc.after_sequence
    return GraphQLError(str(exc), extensions=extensions)


async def _live(events: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
    try:
        async for event in events:
            yield event
    except (Revoked, SubscriberTooSlow) as exc:
        raise _ended(exc) from None
    finally:
        with contextlib.suppress(Exception):
            await events.aclose()


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
        events = watches.state_changes(
            info.context.services,
            info.context.caller,
            info.context.token,
            application=application,
            resource_id=str(resource_id) if resource_id is not None else None,
            after_sequence=after_sequence,
        )
        async for event in _live(events):
            yield ResourceStateEvent.of(event)

    @strawberry.subscription(
        description="Each step status change and each log line of a workflow run, as they happen (live only)."
    )
    async def workflow_step_changed(
        self, info: Info, workflow_id: strawberry.ID | None = None, application: str | None = None
    ) -> AsyncGenerator[WorkflowStepEvent, None]:
        if info.context.principal is None:
            raise unauthenticated()
        events = watches.step_changes(
            info.context.services,
            info.context.caller,
            info.context.token,
            workflow_id=str(workflow_id) if workflow_id is not None else None,
            application=application,
        )
        async for event in _live(events):
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
    """Our expected errors are the service layer's and GraphQLErrors with a code; anything else may
    carry internals (SQL, paths)."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError | ServiceError)


# The limits' validation rules are built once: the validation cache keys on the rule classes, and the
# limiter extensions make new classes per instance, so per-request instances would never hit the cache.
_LIMIT_RULES = [
    QueryCost,
    *QueryDepthLimiter(max_depth=10).validation_rules,
    *MaxAliasesLimiter(max_alias_count=30).validation_rules,
]
_GUARD = guard_with(_LIMIT_RULES)


class _MaskErrors(MaskErrors):
    """Strawberry's, checking for errors by attribute: its check, a runtime-checkable Protocol, costs
    about 11 µs a call, once per answer and once per subscription event."""

    def _process_result(self, result: object) -> None:
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = self._process_errors(errors)  # type: ignore[attr-defined]


def make_schema(*, introspection: bool = True) -> strawberry.Schema:
    extensions: list[Any] = [
        _GUARD,
        lambda: _MaskErrors(should_mask_error=is_unexpected, error_message="internal server error"),
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
