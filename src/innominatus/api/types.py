"""GraphQL object types. Built from rows; related objects load lazily with their own session."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import strawberry
from strawberry.scalars import JSON

from innominatus.db import models
from innominatus.events import StateEvent
from innominatus.providers import Provider as ProviderModel
from innominatus.references import LiveResource, Workload, workload
from innominatus.sealing import is_sealed
from innominatus.states import ResourceState as ResourceStateEnum
from innominatus.states import StepStatus as StepStatusEnum
from innominatus.states import WorkflowStatus as WorkflowStatusEnum

if TYPE_CHECKING:
    from innominatus.api.context import Context

ResourceState = strawberry.enum(ResourceStateEnum, name="ResourceState")
WorkflowStatus = strawberry.enum(WorkflowStatusEnum, name="WorkflowStatus")
StepStatus = strawberry.enum(StepStatusEnum, name="StepStatus")


@strawberry.type
class ProviderWorkflow:
    name: str
    operation: str
    description: str
    category: str
    tags: list[str]


@strawberry.type
class Provider:
    name: str
    version: str
    category: str
    description: str
    capabilities: list[str]
    workflows: list[ProviderWorkflow]

    @classmethod
    def from_model(cls, p: ProviderModel) -> Provider:
        return cls(
            name=p.name,
            version=p.version,
            category=p.category,
            description=p.description,
            capabilities=p.capabilities,
            workflows=[
                ProviderWorkflow(
                    name=w.name,
                    operation=w.operation,
                    description=w.description,
                    category=w.category,
                    tags=list(w.tags),
                )
                for w in p.workflows.values()
            ],
        )


@strawberry.type
class Transition:
    from_state: ResourceState | None
    to_state: ResourceState
    reason: str | None
    at: datetime


@strawberry.type
class WorkflowStep:
    name: str
    type: str
    status: StepStatus
    attempts: int
    logs: str
    stored_outputs: strawberry.Private[dict[str, Any]]
    error_message: str | None
    started_at: datetime | None
    finished_at: datetime | None

    @strawberry.field(description="The step's outputs; secret ones are decrypted for the owning team.")
    def outputs(self, info: strawberry.Info[Context, None]) -> JSON:
        return info.context.store.box.open(self.stored_outputs)

    @classmethod
    def from_row(cls, row: models.WorkflowStep) -> WorkflowStep:
        return cls(
            name=row.name,
            type=row.type,
            status=StepStatusEnum(row.status),
            attempts=row.attempts,
            logs=row.logs,
            stored_outputs=row.outputs,
            error_message=row.error_message,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )


@strawberry.type
class WorkflowExecution:
    id: strawberry.ID
    workflow_name: str
    operation: str
    provider: str
    status: WorkflowStatus
    error_message: str | None
    started_at: datetime
    finished_at: datetime | None
    resource_id: strawberry.Private[str]
    application_name: str
    retry_of_id: strawberry.Private[str | None]
    runner: str | None = strawberry.field(
        description="The replica that ran (or runs) it: host name and a per-start suffix."
    )

    @classmethod
    def from_row(cls, row: models.WorkflowExecution) -> WorkflowExecution:
        return cls(
            id=strawberry.ID(row.id),
            workflow_name=row.workflow_name,
            operation=row.operation,
            provider=row.provider,
            status=WorkflowStatusEnum(row.status),
            error_message=row.error_message,
            started_at=row.started_at,
            finished_at=row.finished_at,
            resource_id=row.resource_id,
            application_name=row.application_name,
            retry_of_id=row.retry_of,
            runner=row.runner,
        )

    @strawberry.field(description="The execution this one retries, if it is a retry.")
    async def retry_of(self, info: strawberry.Info[Context, None]) -> WorkflowExecution | None:
        if self.retry_of_id is None:
            return None
        row = await info.context.loaders.execution.load(self.retry_of_id)
        return WorkflowExecution.from_row(row) if row is not None else None

    @strawberry.field
    async def resource(self, info: strawberry.Info[Context, None]) -> Resource:
        row = await info.context.loaders.resource.load(self.resource_id)
        assert row is not None  # executions are deleted with their resource
        return Resource.from_row(row)

    @strawberry.field
    async def steps(self, info: strawberry.Info[Context, None]) -> list[WorkflowStep]:
        return [WorkflowStep.from_row(r) for r in await info.context.loaders.steps.load(str(self.id))]


@strawberry.type
class Resource:
    id: strawberry.ID
    application: str
    name: str
    type: str
    resource_class: str | None = strawberry.field(name="class")
    state: ResourceState
    provider: str | None
    error_message: str | None
    created_at: datetime
    updated_at: datetime
    workflow_execution_id: strawberry.Private[str | None]
    application_id: strawberry.Private[str]
    # The row itself: its JSON columns are decoded only when a query selects them.
    row: strawberry.Private[Any]

    # The fields answered from one plain column each, by the column: a list selecting only these reads
    # only their columns (no JSON document, no time it does not show).
    COLUMNS: ClassVar[dict[str, str | None]] = {
        "__typename": None,
        "id": "id",
        "application": "application_name",
        "name": "name",
        "type": "type",
        "class": "resource_class",
        "state": "state",
        "provider": "provider",
        "errorMessage": "error_message",
        "createdAt": "created_at",
        "updatedAt": "updated_at",
    }

    @classmethod
    def from_row(cls, row: models.Resource) -> Resource:
        return cls(
            id=strawberry.ID(row.id),
            application=row.application_name,
            name=row.name,
            type=row.type,
            resource_class=row.resource_class,
            state=ResourceStateEnum(row.state),
            provider=row.provider,
            error_message=row.error_message,
            created_at=row.created_at,
            updated_at=row.updated_at,
            workflow_execution_id=row.workflow_execution_id,
            application_id=row.application_id,
            row=row,
        )

    @strawberry.field
    def properties(self) -> JSON:
        return self.row.properties

    @property
    def depends_on_names(self) -> list[str]:
        return list(self.row.depends_on or [])

    @strawberry.field(description="The workflow's outputs; secret ones are decrypted for the owning team.")
    def outputs(self, info: strawberry.Info[Context, None]) -> JSON:
        return info.context.store.box.open(self.row.outputs)

    @strawberry.field(
        description="The names of the outputs that are secret (sealed at rest): a page shows them masked."
    )
    def secret_outputs(self) -> list[str]:
        return sorted(k for k, v in (self.row.outputs or {}).items() if is_sealed(v))

    async def _siblings(self, info: strawberry.Info[Context, None]) -> list[models.Resource]:
        rows = await info.context.loaders.app_resources.load(self.application_id)
        return [r for r in rows if r.id != self.id and r.state != ResourceStateEnum.DELETED]

    @strawberry.field(
        description="The resources this one's params reference (it waits for them to be ACTIVE)."
    )
    async def depends_on(self, info: strawberry.Info[Context, None]) -> list[Resource]:
        names = self.depends_on_names
        return [Resource.from_row(r) for r in await self._siblings(info) if r.name in names]

    @strawberry.field(description="The resources whose params reference this one.")
    async def required_by(self, info: strawberry.Info[Context, None]) -> list[Resource]:
        return [Resource.from_row(r) for r in await self._siblings(info) if self.name in (r.depends_on or [])]

    @strawberry.field
    async def workflow_execution(self, info: strawberry.Info[Context, None]) -> WorkflowExecution | None:
        if self.workflow_execution_id is None:
            return None
        row = await info.context.loaders.execution.load(self.workflow_execution_id)
        return WorkflowExecution.from_row(row) if row is not None else None

    @strawberry.field
    async def transitions(self, info: strawberry.Info[Context, None]) -> list[Transition]:
        return [
            Transition(
                from_state=ResourceStateEnum(r.from_state) if r.from_state else None,
                to_state=ResourceStateEnum(r.to_state),
                reason=r.reason,
                at=r.at,
            )
            for r in await info.context.loaders.transitions.load(str(self.id))
        ]


@strawberry.type
class Application:
    name: str
    revision: int
    spec: JSON
    created_at: datetime
    updated_at: datetime
    id: strawberry.Private[str]
    _workload: strawberry.Private[Workload | None] = None

    @classmethod
    def from_row(cls, row: models.Application) -> Application:
        return cls(
            name=row.name,
            revision=row.revision,
            spec=row.spec,
            created_at=row.created_at,
            updated_at=row.updated_at,
            id=row.id,
        )

    @strawberry.field
    async def resources(self, info: strawberry.Info[Context, None]) -> list[Resource]:
        return [Resource.from_row(r) for r in await info.context.loaders.app_resources.load(self.id)]

    async def _resolved(self, info: strawberry.Info[Context, None]) -> Workload:
        if self._workload is None:
            rows = await info.context.loaders.app_resources.load(self.id)
            box = info.context.store.box
            live = {
                r.name: LiveResource(r.id, r.state, box.open(r.outputs))
                for r in rows
                if r.state != ResourceStateEnum.DELETED
            }
            self._workload = workload(self.spec, live)
        return self._workload

    @strawberry.field(
        description="The containers with every placeholder resolved; null until all resources are ACTIVE."
    )
    async def workload(self, info: strawberry.Info[Context, None]) -> JSON | None:
        return (await self._resolved(info)).containers

    @strawberry.field(description="The resources the workload waits for (not ACTIVE yet).")
    async def pending_resources(self, info: strawberry.Info[Context, None]) -> list[str]:
        return (await self._resolved(info)).pending

    @strawberry.field(
        description="Placeholders naming outputs a provider never produced; the rest still resolves."
    )
    async def workload_errors(self, info: strawberry.Info[Context, None]) -> list[str]:
        return (await self._resolved(info)).errors


@strawberry.type
class WorkflowStepState:
    name: str
    status: StepStatus
    attempts: int


@strawberry.type
class WorkflowStepEvent:
    workflow_id: strawberry.ID
    application: str
    step: WorkflowStepState
    log_line: str | None = strawberry.field(
        description="Set when the event is a log line; null for status changes."
    )
    at: datetime


@strawberry.type
class ResourceStateEvent:
    sequence: int
    resource_id: strawberry.ID
    application: str
    from_state: ResourceState | None
    to_state: ResourceState
    reason: str | None
    at: datetime
    # A plain attribute, not a resolver: every subscriber of the event shares this one object.
    resource: Resource = strawberry.field(
        description="The resource as it was when the event was published (a replayed event: when replayed)."
    )
    # Execution results by operation, shared by the subscribers that ask the same (api/execution.py).
    results: strawberry.Private[dict[Any, Any]] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, event: StateEvent) -> ResourceStateEvent:
        """The event as every subscriber sees it, built once per event (not once per subscriber)."""
        built = event.views.get("graphql")
        if built is None:
            assert event.resource is not None  # resources are never removed, only marked DELETED
            built = event.views["graphql"] = cls(
                sequence=event.sequence,
                resource_id=strawberry.ID(event.resource_id),
                application=event.application_name,
                from_state=ResourceStateEnum(event.from_state) if event.from_state else None,
                to_state=ResourceStateEnum(event.to_state),
                reason=event.reason,
                at=event.at,
                resource=Resource.from_row(event.resource),
            )
        return built


@strawberry.type
class SubmitSpecPayload:
    application: Application
    resources: list[Resource]
    changed: bool = strawberry.field(description="False when the spec equals the current revision.")


@strawberry.type
class ApiToken:
    id: strawberry.ID
    team: str
    role: str
    description: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: models.Token) -> ApiToken:
        return cls(
            id=strawberry.ID(row.id),
            team=row.team,
            role=row.role,
            description=row.description,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )


@strawberry.type
class CreatedToken:
    token: str = strawberry.field(description="The token itself: shown only now, stored only as a hash.")
    info: ApiToken


@strawberry.type
class GraphNode:
    id: strawberry.ID
    kind: str = strawberry.field(description="application, resource, provider or workflow")
    label: str


@strawberry.type
class GraphEdge:
    source: strawberry.ID
    target: strawberry.ID
    label: str = strawberry.field(description="has, depends on, provided by or runs")


@strawberry.type
class Graph:
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    mermaid: str = strawberry.field(description="The same graph as a Mermaid flowchart.")
    dot: str = strawberry.field(description="The same graph in Graphviz DOT.")
