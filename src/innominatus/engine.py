"""The orchestration engine: claims work through the database and runs workflows concurrently, each
in its own task with its own context.

Work is (a) REQUESTED resources whose dependencies are ACTIVE, which it moves to PROVISIONING, and
(b) RUNNING executions nobody holds a live lease on: update/delete/retry runs the API created, and
runs whose engine died (their lease expired), which resume at the interrupted step. It wakes on
committed events (no polling delay); a slow periodic sweep and lease expiries are the safety nets.
Claims go through the database (FOR UPDATE SKIP LOCKED on PostgreSQL, the write lock on SQLite), so
several engines can share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from innominatus import lifecycle
from innominatus.db.models import Application, Resource, WorkflowExecution, WorkflowStep, utcnow
from innominatus.events import StateEvent, StepEvent
from innominatus.executions import new_execution
from innominatus.operations import finish_application_deletion, live_resources
from innominatus.providers import Catalog, ResolveError, WorkflowRef
from innominatus.references import LiveResource, MissingOutput, resolve_params
from innominatus.sealing import mask, secret_values
from innominatus.states import Operation, ResourceState, StepStatus, WorkflowStatus
from innominatus.store import Store
from innominatus.workflows.definition import Step
from innominatus.workflows.policy import StepResult, kill_strays
from innominatus.workflows.runner import (
    ParameterError,
    RunContext,
    bind_parameters,
    render_outputs,
    run_steps,
)
from innominatus.workflows.templates import RenderError

log = logging.getLogger(__name__)

SUCCESS_STATE = {
    Operation.CREATE: ResourceState.ACTIVE,
    Operation.UPDATE: ResourceState.ACTIVE,
    Operation.DELETE: ResourceState.DELETED,
}


@dataclass
class Claim:
    resource_id: str
    execution_id: str
    operation: str
    workflow: WorkflowRef
    inputs: dict[str, Any]
    app: dict[str, Any]
    resource: dict[str, Any]
    deadline: datetime | None
    steps: list[dict[str, Any]] = field(default_factory=list)  # stored step rows (opened), for resuming
    secrets: set[str] = field(default_factory=set)  # plaintext secret values this run may print: masked
    team: str | None = None


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
        self._next_expiry: datetime | None = None  # earliest lease another engine holds
        self._running: dict[str, asyncio.Task[None]] = {}  # execution id → task
        self._by_resource: dict[str, str] = {}  # resource id → execution id running here
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.store.hub.add_listener(self._on_event)
        self._wake.set()
        self._loop_task = asyncio.create_task(self._loop(), name="innominatus-engine")
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="innominatus-leases")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop_task, self._heartbeat_task, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Interrupted runs resume at once in the next engine instead of waiting out the lease.
        with contextlib.suppress(Exception):
            async with self.store.transaction() as session:
                await session.execute(
                    update(WorkflowExecution)
                    .where(
                        WorkflowExecution.lease_owner == self.worker_id,
                        WorkflowExecution.status == WorkflowStatus.RUNNING,
                    )
                    .values(lease_expires_at=utcnow())
                )

    def _on_event(self, event: StateEvent) -> None:
        if event.to_state in (
            ResourceState.REQUESTED,
            ResourceState.ACTIVE,
            ResourceState.UPDATING,
            ResourceState.DELETING,
            ResourceState.DELETED,
            ResourceState.PROVISIONING,
        ):
            # New work, a dependency now ACTIVE, or a dependent now DELETED may unblock something.
            self._backlog = True
            self._wake.set()
        if event.to_state == ResourceState.DELETING:
            self._cancel_local(event.resource_id, keep_operation=Operation.DELETE)

    def _cancel_local(self, resource_id: str, keep_operation: str) -> None:
        execution_id = self._by_resource.get(resource_id)
        task = self._running.get(execution_id) if execution_id else None
        if task is not None and getattr(task, "operation", None) != keep_operation:
            task.cancel()

    async def _loop(self) -> None:
        while True:
            timeout = self.sweep_interval
            if self._next_expiry is not None:
                timeout = min(timeout, max(0.05, (self._next_expiry - utcnow()).total_seconds() + 0.05))
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                self._backlog = True  # the sweep: look even without a wake-up
            self._wake.clear()
            try:
                await self._claim_and_start()
            except Exception:
                log.exception("claiming work failed; trying again in a second")
                await asyncio.sleep(1)
                self._backlog = True
                self._wake.set()

    async def _heartbeat(self) -> None:
        """Renew our leases; a run whose row says it is no longer ours (cancelled) is stopped."""
        interval = max(self.lease.total_seconds() / 3, 0.1)
        while True:
            await asyncio.sleep(interval)
            if not self._running:
                continue
            try:
                async with self.store.transaction() as session:
                    result = await session.execute(
                        update(WorkflowExecution)
                        .where(
                            WorkflowExecution.lease_owner == self.worker_id,
                            WorkflowExecution.status == WorkflowStatus.RUNNING,
                        )
                        .values(lease_expires_at=utcnow() + self.lease)
                        .returning(WorkflowExecution.id)
                    )
                    ours = set(result.scalars().all())
            except Exception:
                log.exception("renewing leases failed")
                continue
            for execution_id, task in list(self._running.items()):
                if execution_id not in ours and not task.done():
                    log.info("execution %s was cancelled or taken over; stopping it here", execution_id)
                    task.cancel()

    async def _claim_and_start(self) -> None:
        free = self.concurrency - len(self._running)
        if free <= 0 or not self._backlog:
            return  # a finishing task wakes the loop again while there is a backlog
        self._backlog = False
        claims = await self._claim(free)
        for claim in claims:
            earlier = self._running.get(self._by_resource.get(claim.resource_id, ""))
            task = asyncio.create_task(self._run(claim, earlier), name=f"workflow-{claim.execution_id}")
            task.operation = claim.operation  # type: ignore[attr-defined]
            self._running[claim.execution_id] = task
            self._by_resource[claim.resource_id] = claim.execution_id
            task.add_done_callback(lambda t, c=claim: self._finished(c))
        if len(claims) == free:
            self._backlog = True  # there may be more waiting
            self._wake.set()

    def _finished(self, claim: Claim) -> None:
        self._running.pop(claim.execution_id, None)
        if self._by_resource.get(claim.resource_id) == claim.execution_id:
            del self._by_resource[claim.resource_id]
        if self._backlog:
            self._wake.set()

    # ---------------------------------------------------------------------------------------- claim

    async def _claim(self, limit: int) -> list[Claim]:
        claims: list[Claim] = []
        async with self.store.transaction(sequenced=True) as session:
            siblings: dict[str, dict[str, Resource]] = {}  # per application, once per pass
            await self._claim_requested(session, limit, claims, siblings)
            if len(claims) < limit:
                await self._claim_runs(session, limit, claims, siblings)
            self._next_expiry = await session.scalar(
                select(WorkflowExecution.lease_expires_at)
                .where(
                    WorkflowExecution.status == WorkflowStatus.RUNNING,
                    WorkflowExecution.lease_owner.is_not(None),
                    WorkflowExecution.lease_owner != self.worker_id,
                )
                .order_by(WorkflowExecution.lease_expires_at)
                .limit(1)
            )
        return claims

    def _locking(self, query: Any) -> Any:
        return query.with_for_update(skip_locked=True) if self.store.dialect == "postgresql" else query

    async def _siblings(
        self, session: AsyncSession, application_id: str, cache: dict[str, dict[str, Resource]]
    ) -> dict[str, Resource]:
        # The rows sit in the session's identity map: states changed in this pass show through.
        if application_id not in cache:
            cache[application_id] = await live_resources(session, application_id)
        return cache[application_id]

    async def _claim_requested(
        self,
        session: AsyncSession,
        limit: int,
        claims: list[Claim],
        cache: dict[str, dict[str, Resource]],
    ) -> None:
        query = self._locking(
            select(Resource).where(Resource.state == ResourceState.REQUESTED).order_by(Resource.created_at)
        )
        for resource in (await session.scalars(query)).all():
            if len(claims) >= limit:
                return
            siblings = await self._siblings(session, resource.application_id, cache)
            if any(
                siblings.get(dep) is None or siblings[dep].state != ResourceState.ACTIVE
                for dep in resource.depends_on
            ):
                continue  # waits until what it references is ACTIVE
            try:
                resolution = self.catalog.resolve(resource.type, Operation.CREATE, resource.resource_class)
                inputs = await self._inputs(session, resource, siblings)
            except (ResolveError, MissingOutput, ValueError) as exc:  # ValueError: unreadable sealed outputs
                await lifecycle.transition(session, resource, ResourceState.FAILED, str(exc))
                continue
            execution = new_execution(
                session,
                resource,
                resolution.workflow,
                resolution.provider.name,
                Operation.CREATE,
                inputs=self.store.box.seal_all(inputs),
                lease_owner=self.worker_id,
                lease=self.lease,
            )
            await lifecycle.transition(
                session, resource, ResourceState.PROVISIONING, f"workflow {resolution.workflow.name} started"
            )
            claims.append(self._claim_for(resource, execution, resolution.workflow, [], inputs, siblings))

    async def _claim_runs(
        self,
        session: AsyncSession,
        limit: int,
        claims: list[Claim],
        cache: dict[str, dict[str, Resource]],
    ) -> None:
        now = utcnow()
        query = self._locking(
            select(WorkflowExecution)
            .where(
                WorkflowExecution.status == WorkflowStatus.RUNNING,
                or_(WorkflowExecution.lease_owner.is_(None), WorkflowExecution.lease_expires_at < now),
            )
            .order_by(WorkflowExecution.started_at)
        )
        for execution in (await session.scalars(query)).all():
            if len(claims) >= limit:
                return
            if execution.id in self._running:
                continue
            resource = await session.get(Resource, execution.resource_id)
            if resource is None:
                continue
            try:
                siblings = await self._siblings(session, resource.application_id, cache)
                await self._claim_run(session, execution, resource, siblings, now, claims)
            except ValueError as exc:  # sealed inputs or outputs that this server's key cannot open
                await self._fail_unclaimed(
                    session,
                    execution,
                    resource,
                    f"{exc} (was INNOMINATUS_SECRET_KEY or its key file changed?)",
                )

    async def _claim_run(
        self,
        session: AsyncSession,
        execution: WorkflowExecution,
        resource: Resource,
        siblings: dict[str, Resource],
        now: datetime,
        claims: list[Claim],
    ) -> None:
        if execution.operation == Operation.DELETE and any(
            resource.name in other.depends_on for other in siblings.values() if other.id != resource.id
        ):
            return  # dependents go first
        workflow = self._workflow(execution)
        if workflow is None:
            await self._fail_unclaimed(
                session,
                execution,
                resource,
                f"workflow '{execution.workflow_name}' of provider '{execution.provider}' is no longer loaded",
            )
            return
        if execution.inputs:
            inputs = self.store.box.open_all(execution.inputs)
        else:
            try:
                inputs = await self._inputs(session, resource, siblings)
            except MissingOutput as exc:
                await self._fail_unclaimed(session, execution, resource, str(exc))
                return
            execution.inputs = self.store.box.seal_all(inputs)
        if execution.lease_owner is not None:
            log.info(
                "resuming execution %s of %s (its engine stopped)", execution.id, execution.workflow_name
            )
        execution.lease_owner = self.worker_id
        execution.lease_expires_at = now + self.lease
        steps = (
            await session.scalars(
                select(WorkflowStep)
                .where(WorkflowStep.execution_id == execution.id)
                .order_by(WorkflowStep.position)
            )
        ).all()
        rows = [
            {"status": s.status, "outputs": self.store.box.open(s.outputs), "attempts": s.attempts}
            for s in steps
        ]
        claims.append(self._claim_for(resource, execution, workflow, rows, inputs, siblings))

    def _workflow(self, execution: WorkflowExecution) -> WorkflowRef | None:
        provider = self.catalog.providers.get(execution.provider)
        return provider.workflows.get(execution.workflow_name) if provider else None

    async def _inputs(
        self, session: AsyncSession, resource: Resource, siblings: dict[str, Resource]
    ) -> dict[str, Any]:
        """The workflow's inputs: the properties with placeholders resolved, plus who is asking."""
        app = await session.get(Application, resource.application_id)
        metadata = (app.spec.get("metadata") if app else None) or {}
        live = {n: LiveResource(r.id, r.state, self.store.box.open(r.outputs)) for n, r in siblings.items()}
        return {
            **resolve_params(resource.properties, metadata, live),
            "app_name": resource.application_name,
            "resource_name": resource.name,
            "resource_type": resource.type,
        }

    def _claim_for(
        self,
        resource: Resource,
        execution: WorkflowExecution,
        workflow: WorkflowRef,
        steps: list[dict[str, Any]],
        inputs: dict[str, Any],
        siblings: dict[str, Resource],
    ) -> Claim:
        box = self.store.box
        declared = workflow.definition.sensitive_outputs
        outputs = box.open(resource.outputs)
        known = secret_values(inputs, declared) | secret_values(outputs, declared)
        for sibling in siblings.values():
            known |= secret_values(box.open(sibling.outputs))
        for row in steps:
            known |= secret_values(row["outputs"], declared)
        return Claim(
            resource_id=resource.id,
            execution_id=execution.id,
            operation=execution.operation,
            workflow=workflow,
            inputs=inputs,
            app={"name": resource.application_name},
            resource={
                "id": resource.id,
                "name": resource.name,
                "type": resource.type,
                "class": resource.resource_class,
                "outputs": outputs,
            },
            deadline=execution.deadline_at,
            steps=steps,
            secrets=known,
            team=resource.team,
        )

    async def _fail_unclaimed(
        self, session: AsyncSession, execution: WorkflowExecution, resource: Resource, error: str
    ) -> None:
        execution.status = WorkflowStatus.FAILED
        execution.error_message = error
        execution.finished_at = utcnow()
        await lifecycle.transition(session, resource, ResourceState.FAILED, error)

    # ------------------------------------------------------------------------------------------ run

    async def _run(self, claim: Claim, earlier: asyncio.Task[None] | None) -> None:
        if earlier is not None:
            # A cancelled run of the same resource: its process group is gone before this one starts.
            await asyncio.wait([earlier])
        try:
            await self._execute(claim)
        except asyncio.CancelledError:
            raise  # cancelled (resource deleted, or shutdown): the row says what happened
        except Exception as exc:
            log.exception("workflow %s for resource %s crashed", claim.execution_id, claim.resource_id)
            await self._finish(claim, outputs=None, error=f"internal error: {type(exc).__name__}: {exc}")

    async def _execute(self, claim: Claim) -> None:
        definition = claim.workflow.definition
        try:
            parameters = bind_parameters(definition, claim.inputs)
        except ParameterError as exc:
            await self._finish(claim, outputs=None, error=f"workflow '{definition.name}': {exc}")
            return
        ctx = RunContext(
            parameters=parameters, app=claim.app, resource=claim.resource, run_id=claim.execution_id
        )
        start_at = 0
        for index, row in enumerate(claim.steps):
            if row["status"] != StepStatus.SUCCEEDED:
                break
            ctx.steps[definition.steps[index].name] = {"outputs": row["outputs"]}
            start_at = index + 1
        if start_at < len(claim.steps) and claim.steps[start_at]["status"] == StepStatus.RUNNING:
            # Interrupted: whatever the dead engine left running of it goes first.
            strays = await asyncio.to_thread(kill_strays, claim.execution_id)
            if strays:
                log.info(
                    "killed %d leftover process group(s) of execution %s", len(strays), claim.execution_id
                )
            step = definition.steps[start_at]
            if not step.idempotent:
                await self._finish(
                    claim, outputs=None, error=f"step '{step.name}' failed: interrupted, not safe to re-run"
                )
                return
        recorder = _StepRecorder(self.store, claim)
        try:
            async with asyncio.timeout_at(_loop_deadline(claim.deadline)):
                outcome = await run_steps(
                    definition, ctx, recorder, start_at=start_at, platform=self.catalog.platform
                )
        except TimeoutError:
            error = f"workflow '{definition.name}' timed out after {definition.timeout:g}s"
            await recorder.fail_current(error)
            await self._finish(claim, outputs=None, error=error)
            return
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
        declared = claim.workflow.definition.sensitive_outputs
        if outputs:
            claim.secrets |= secret_values(outputs, declared)
            outputs = self.store.box.seal(outputs, declared)
        error = mask(error, claim.secrets)
        async with self.store.transaction(sequenced=True) as session:
            execution = await session.get(WorkflowExecution, claim.execution_id)
            resource = await session.get(Resource, claim.resource_id)
            if execution is None or resource is None:
                return
            if execution.status != WorkflowStatus.RUNNING or execution.lease_owner != self.worker_id:
                return  # cancelled or taken over meanwhile: not ours to finish
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
                # A step still RUNNING here was interrupted (or the run crashed): it failed with the run.
                await session.execute(
                    update(WorkflowStep)
                    .where(
                        WorkflowStep.execution_id == claim.execution_id,
                        WorkflowStep.status == StepStatus.RUNNING,
                    )
                    .values(status=StepStatus.FAILED, error_message=error, finished_at=now)
                )
                await lifecycle.transition(session, resource, ResourceState.FAILED, error)
                return
            if claim.operation == Operation.CREATE:
                resource.outputs = outputs or {}
            elif claim.operation == Operation.UPDATE:
                resource.outputs = {**resource.outputs, **(outputs or {})}
            await lifecycle.transition(
                session,
                resource,
                SUCCESS_STATE[Operation(claim.operation)],
                f"workflow {execution.workflow_name} succeeded",
            )
            if claim.operation == Operation.DELETE:
                app = await session.get(Application, resource.application_id)
                if app is not None:
                    await finish_application_deletion(session, app)


def _loop_deadline(deadline: datetime | None) -> float | None:
    if deadline is None:
        return None
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - utcnow()).total_seconds()


class _StepRecorder:
    """Persists each attempt of each step as the runner reports it, and streams it live."""

    def __init__(self, store: Store, claim: Claim) -> None:
        self.store = store
        self.claim = claim
        self.current: int | None = None
        self.attempt = 1

    def _publish(self, index: int, status: str, attempts: int, line: str | None = None) -> None:
        self.store.hub.publish_step(
            StepEvent(
                workflow_id=self.claim.execution_id,
                application_name=self.claim.app["name"],
                team=self.claim.team,
                step_name=self.claim.workflow.definition.steps[index].name,
                status=status,
                attempts=attempts,
                log_line=line,
                at=utcnow(),
            )
        )

    def _row(self, index: int) -> Any:
        return (WorkflowStep.execution_id == self.claim.execution_id) & (WorkflowStep.position == index)

    async def attempt_started(self, index: int, step: Step) -> int:
        self.current = index
        async with self.store.transaction() as session:
            result = await session.execute(
                update(WorkflowStep)
                .where(self._row(index))
                .values(
                    status=StepStatus.RUNNING,
                    attempts=WorkflowStep.attempts + 1,
                    started_at=utcnow(),
                    finished_at=None,
                    error_message=None,
                )
                .returning(WorkflowStep.attempts)
            )
            attempt = int(result.scalar_one())
        self.attempt = attempt
        self._publish(index, StepStatus.RUNNING, attempt)
        return attempt

    async def attempt_finished(
        self, index: int, step: Step, attempt: int, result: StepResult, final: bool
    ) -> None:
        declared = self.claim.workflow.definition.sensitive_outputs
        # This step's own secret outputs are known only now: they are masked before anything is stored.
        self.claim.secrets |= secret_values(result.outputs, declared)
        secrets = self.claim.secrets
        error = mask(result.error, secrets)
        logs = mask(result.logs, secrets) or ""
        if attempt > 1 or step.retries > 0:
            outcome = "succeeded" if result.succeeded else f"failed: {error}"
            newline = "" if logs.endswith("\n") or not logs else "\n"
            logs = f"--- attempt {attempt} ---\n{logs}{newline}--- attempt {attempt} {outcome} ---\n"
        status = StepStatus.RUNNING
        if final:
            status = StepStatus.SUCCEEDED if result.succeeded else StepStatus.FAILED
        values: dict[str, Any] = {"logs": WorkflowStep.logs + logs, "error_message": error}
        if final:
            values.update(
                status=status, outputs=self.store.box.seal(result.outputs, declared), finished_at=utcnow()
            )
        async with self.store.transaction() as session:
            await session.execute(update(WorkflowStep).where(self._row(index)).values(**values))
        self._publish(index, status, attempt)
        if final:
            self.current = None

    async def log_line(self, index: int, stream: str, line: str) -> None:
        self._publish(index, StepStatus.RUNNING, self.attempt, mask(line, self.claim.secrets))

    async def fail_current(self, error: str) -> None:
        if self.current is None:
            return
        async with self.store.transaction() as session:
            await session.execute(
                update(WorkflowStep)
                .where(self._row(self.current))
                .values(
                    status=StepStatus.FAILED,
                    error_message=mask(error, self.claim.secrets),
                    finished_at=utcnow(),
                )
            )
        self._publish(self.current, StepStatus.FAILED, self.attempt)
