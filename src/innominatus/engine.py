"""The orchestration engine: claims requested resources through the database and runs their
workflows concurrently, each in its own task with its own context.

It wakes on every committed REQUESTED event (no polling delay); a slow periodic sweep is only a
safety net. Claims go through the database (FOR UPDATE SKIP LOCKED on PostgreSQL, the write lock
on SQLite), so several engines can share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from innominatus import lifecycle
from innominatus.db.models import Resource, WorkflowExecution, WorkflowStep, new_id, utcnow
from innominatus.events import StateEvent
from innominatus.providers import Catalog, Resolution, ResolveError
from innominatus.states import Operation, ResourceState, StepStatus, WorkflowStatus
from innominatus.store import Store
from innominatus.workflows.definition import Step
from innominatus.workflows.policy import StepResult
from innominatus.workflows.runner import (
    ParameterError,
    RunContext,
    bind_parameters,
    render_outputs,
    run_steps,
)
from innominatus.workflows.templates import RenderError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    resource_id: str
    execution_id: str
    resolution: Resolution
    inputs: dict[str, Any]
    app: dict[str, Any]
    resource: dict[str, Any]


class Engine:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        *,
        concurrency: int = 16,
        sweep_interval: float = 30.0,
        lease_seconds: float = 15.0,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.concurrency = concurrency
        self.sweep_interval = sweep_interval
        self.lease = timedelta(seconds=lease_seconds)
        self.worker_id = f"engine-{uuid.uuid4().hex[:12]}"
        self._wake = asyncio.Event()
        self._backlog = True  # work may be waiting that no free slot has taken yet
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.store.hub.add_listener(self._on_event)
        self._wake.set()
        self._loop_task = asyncio.create_task(self._loop(), name="innominatus-engine")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop_task, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _on_event(self, event: StateEvent) -> None:
        if event.to_state == ResourceState.REQUESTED:
            self._backlog = True
            self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.sweep_interval):
                    await self._wake.wait()
            except TimeoutError:
                self._backlog = True  # the safety-net sweep: look even without a wake-up
            self._wake.clear()
            try:
                await self._claim_and_start()
            except Exception:
                log.exception("claiming work failed; trying again in a second")
                await asyncio.sleep(1)
                self._backlog = True
                self._wake.set()

    async def _claim_and_start(self) -> None:
        free = self.concurrency - len(self._running)
        if free <= 0 or not self._backlog:
            return  # a finishing task wakes the loop again while there is a backlog
        self._backlog = False
        claims = await self._claim(free)
        for claim in claims:
            task = asyncio.create_task(self._run(claim), name=f"workflow-{claim.execution_id}")
            self._running.add(task)
            task.add_done_callback(self._finished)
        if len(claims) == free:
            self._backlog = True  # there may be more waiting
            self._wake.set()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._backlog:
            self._wake.set()

    # ---------------------------------------------------------------------------------------- claim

    async def _claim(self, limit: int) -> list[Claim]:
        claims: list[Claim] = []
        async with self.store.transaction() as session:
            query = (
                select(Resource)
                .where(Resource.state == ResourceState.REQUESTED)
                .order_by(Resource.created_at)
                .limit(limit)
            )
            if self.store.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            for resource in (await session.scalars(query)).all():
                try:
                    resolution = self.catalog.resolve(
                        resource.type, Operation.CREATE, resource.resource_class
                    )
                except ResolveError as exc:
                    await lifecycle.transition(session, resource, ResourceState.FAILED, str(exc))
                    continue
                claims.append(await self._start_execution(session, resource, resolution, Operation.CREATE))
                await lifecycle.transition(
                    session,
                    resource,
                    ResourceState.PROVISIONING,
                    f"workflow {resolution.workflow.name} started",
                )
        return claims

    async def _start_execution(
        self, session: Any, resource: Resource, resolution: Resolution, operation: str
    ) -> Claim:
        """The execution row and its steps exist, linked to the resource, before step 1 runs."""
        now = utcnow()
        inputs = {
            **resource.properties,
            "app_name": resource.application_name,
            "resource_name": resource.name,
            "resource_type": resource.type,
        }
        execution = WorkflowExecution(
            id=new_id(),
            resource_id=resource.id,
            application_name=resource.application_name,
            workflow_name=resolution.workflow.name,
            operation=operation,
            provider=resolution.provider.name,
            status=WorkflowStatus.RUNNING,
            inputs=inputs,
            lease_owner=self.worker_id,
            lease_expires_at=now + self.lease,
            started_at=now,
        )
        session.add(execution)
        for position, step in enumerate(resolution.workflow.definition.steps):
            session.add(
                WorkflowStep(
                    execution_id=execution.id,
                    position=position,
                    name=step.name,
                    type=step.type,
                    status=StepStatus.PENDING,
                    attempts=0,
                    logs="",
                    outputs={},
                )
            )
        resource.workflow_execution_id = execution.id
        resource.provider = resolution.provider.name
        return Claim(
            resource_id=resource.id,
            execution_id=execution.id,
            resolution=resolution,
            inputs=inputs,
            app={"name": resource.application_name},
            resource={
                "id": resource.id,
                "name": resource.name,
                "type": resource.type,
                "class": resource.resource_class,
            },
        )

    # ------------------------------------------------------------------------------------------ run

    async def _run(self, claim: Claim) -> None:
        try:
            await self._execute(claim)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("workflow %s for resource %s crashed", claim.execution_id, claim.resource_id)
            await self._finish(claim, outputs=None, error=f"internal error: {type(exc).__name__}: {exc}")

    async def _execute(self, claim: Claim) -> None:
        definition = claim.resolution.workflow.definition
        try:
            parameters = bind_parameters(definition, claim.inputs)
        except ParameterError as exc:
            await self._finish(claim, outputs=None, error=f"workflow '{definition.name}': {exc}")
            return
        ctx = RunContext(parameters=parameters, app=claim.app, resource=claim.resource)
        outcome = await run_steps(definition, ctx, _StepRecorder(self.store, claim.execution_id))
        if not outcome.succeeded:
            await self._finish(claim, outputs=None, error=outcome.error)
            return
        try:
            outputs = render_outputs(definition, ctx)
        except RenderError as exc:
            await self._finish(claim, outputs=None, error=f"workflow '{definition.name}' outputs: {exc}")
            return
        await self._finish(claim, outputs=outputs, error=None)

    async def _finish(self, claim: Claim, *, outputs: dict[str, Any] | None, error: str | None) -> None:
        now = utcnow()
        async with self.store.transaction() as session:
            execution = await session.get(WorkflowExecution, claim.execution_id)
            resource = await session.get(Resource, claim.resource_id)
            if execution is None or resource is None:
                return
            execution.status = WorkflowStatus.FAILED if error else WorkflowStatus.SUCCEEDED
            execution.error_message = error
            execution.finished_at = now
            execution.lease_owner = None
            execution.lease_expires_at = None
            await session.execute(
                update(WorkflowStep)
                .where(
                    WorkflowStep.execution_id == claim.execution_id, WorkflowStep.status == StepStatus.PENDING
                )
                .values(status=StepStatus.SKIPPED)
            )
            if error:
                await lifecycle.transition(session, resource, ResourceState.FAILED, error)
            else:
                resource.outputs = outputs or {}
                await lifecycle.transition(
                    session, resource, ResourceState.ACTIVE, f"workflow {execution.workflow_name} succeeded"
                )


class _StepRecorder:
    """Persists each step's progress as the runner reports it."""

    def __init__(self, store: Store, execution_id: str) -> None:
        self.store = store
        self.execution_id = execution_id

    async def _update(self, index: int, **values: Any) -> None:
        async with self.store.transaction() as session:
            await session.execute(
                update(WorkflowStep)
                .where(WorkflowStep.execution_id == self.execution_id, WorkflowStep.position == index)
                .values(**values)
            )

    async def step_started(self, index: int, step: Step) -> None:
        await self._update(
            index, status=StepStatus.RUNNING, started_at=utcnow(), attempts=WorkflowStep.attempts + 1
        )

    async def step_finished(self, index: int, step: Step, result: StepResult) -> None:
        await self._update(
            index,
            status=StepStatus.SUCCEEDED if result.succeeded else StepStatus.FAILED,
            logs=result.logs,
            outputs=result.outputs,
            error_message=result.error,
            finished_at=utcnow(),
        )

    async def log_line(self, index: int, stream: str, line: str) -> None:
        return None  # logs are stored whole when the step ends
