"""Workflow execution rows: a new run (with its steps, linked to its resource before step 1), a retry
that keeps the steps that already succeeded, and cancellation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from innominatus.db.models import Resource, WorkflowExecution, WorkflowStep, new_id, utcnow
from innominatus.events.listen import CANCEL
from innominatus.providers import WorkflowRef
from innominatus.states import StepStatus, WorkflowStatus


def new_execution(
    session: AsyncSession,
    resource: Resource,
    workflow: WorkflowRef,
    provider: str,
    operation: str,
    *,
    inputs: dict[str, Any] | None = None,
    lease_owner: str | None = None,
    lease_until: Any = None,
    started: bool = False,
) -> WorkflowExecution:
    """A RUNNING execution; without a lease it waits for an engine to claim it.

    `inputs` are the resolved parameters; empty means "resolve them when the run starts". `started`:
    the claiming engine starts it now, so its first step is recorded as RUNNING (attempt 1) right here.
    """
    now = utcnow()
    timeout = workflow.definition.timeout
    execution = WorkflowExecution(
        id=new_id(),
        resource_id=resource.id,
        application_name=resource.application_name,
        team=resource.team,
        workflow_name=workflow.name,
        operation=operation,
        provider=provider,
        status=WorkflowStatus.RUNNING,
        inputs=inputs or {},
        lease_owner=lease_owner,
        lease_expires_at=lease_until if lease_owner else None,  # the database's clock (db/clock.py)
        lease_token=1 if lease_owner else 0,
        runner=lease_owner,
        deadline_at=now + timedelta(seconds=timeout) if timeout else None,
        started_at=now,
    )
    session.add(execution)
    for position, step in enumerate(workflow.definition.steps):
        first = started and position == 0
        session.add(
            WorkflowStep(
                execution_id=execution.id,
                position=position,
                name=step.name,
                type=step.type,
                status=StepStatus.RUNNING if first else StepStatus.PENDING,
                attempts=1 if first else 0,
                logs="",
                outputs={},
                started_at=now if first else None,
            )
        )
    resource.workflow_execution_id = execution.id
    resource.provider = provider
    return execution


async def retry_execution(
    session: AsyncSession, resource: Resource, old: WorkflowExecution
) -> WorkflowExecution:
    """A new run of `old`'s workflow from its first failed step; steps that succeeded keep their outputs."""
    now = utcnow()
    duration = (old.deadline_at - old.started_at) if old.deadline_at else None
    execution = WorkflowExecution(
        id=new_id(),
        resource_id=resource.id,
        application_name=resource.application_name,
        team=resource.team,
        workflow_name=old.workflow_name,
        operation=old.operation,
        provider=old.provider,
        status=WorkflowStatus.RUNNING,
        inputs=old.inputs,
        retry_of=old.id,
        deadline_at=now + duration if duration else None,
        started_at=now,
    )
    session.add(execution)
    steps = (
        await session.scalars(
            select(WorkflowStep).where(WorkflowStep.execution_id == old.id).order_by(WorkflowStep.position)
        )
    ).all()
    for step in steps:
        kept = step.status == StepStatus.SUCCEEDED
        session.add(
            WorkflowStep(
                execution_id=execution.id,
                position=step.position,
                name=step.name,
                type=step.type,
                status=StepStatus.SUCCEEDED if kept else StepStatus.PENDING,
                attempts=step.attempts if kept else 0,
                # Not copied: the earlier run keeps them, and copies would grow with every retry.
                logs=f"[logs of this step are in workflow run {old.id}]\n" if kept else "",
                outputs=step.outputs if kept else {},
                started_at=step.started_at if kept else None,
                finished_at=step.finished_at if kept else None,
            )
        )
    resource.workflow_execution_id = execution.id
    return execution


async def cancel_execution(session: AsyncSession, execution: WorkflowExecution, reason: str) -> None:
    """Mark a run CANCELLED; the engine running it kills its step's process group when told (PostgreSQL:
    a notification, delivered to every replica when this transaction commits) and at its next lease
    renewal at the latest."""
    now = utcnow()
    if session.bind.dialect.name == "postgresql":
        await session.execute(select(func.pg_notify(CANCEL, execution.id)))
    execution.status = WorkflowStatus.CANCELLED
    execution.error_message = reason
    execution.finished_at = now
    execution.lease_expires_at = now
    await session.execute(
        update(WorkflowStep)
        .where(WorkflowStep.execution_id == execution.id, WorkflowStep.status == StepStatus.RUNNING)
        .values(status=StepStatus.FAILED, error_message=reason, finished_at=now)
    )
    await session.execute(
        update(WorkflowStep)
        .where(WorkflowStep.execution_id == execution.id, WorkflowStep.status == StepStatus.PENDING)
        .values(status=StepStatus.SKIPPED)
    )


async def steps_in(session: AsyncSession, execution_ids: list[str]) -> dict[str, list[WorkflowStep]]:
    """The steps of several executions (one query), in order, in the given session."""
    found: dict[str, list[WorkflowStep]] = {i: [] for i in execution_ids}
    if execution_ids:
        rows = await session.scalars(
            select(WorkflowStep)
            .where(WorkflowStep.execution_id.in_(execution_ids))
            .order_by(WorkflowStep.execution_id, WorkflowStep.position)
        )
        for row in rows:
            found[row.execution_id].append(row)
    return found
