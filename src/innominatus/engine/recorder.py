"""Recording a run: each step attempt as the runner reports it (streamed live at once), and the run's end.

Writes are folded to keep round trips per resource low: a step's final result is written together with
the next step's start, and the last step's result together with the run's finish, which is one
transaction (step results, outputs, execution, resource state, event). Secrets are masked before
anything is stored or streamed.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import bindparam, case, exists, func, insert, literal, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from innominatus import lifecycle
from innominatus.db import direct
from innominatus.db.models import Application, Event, Resource, WorkflowExecution, WorkflowStep, utcnow
from innominatus.engine.claims import Claim
from innominatus.events import StepEvent
from innominatus.operations import finish_application_deletion
from innominatus.sealing import mask, secret_values
from innominatus.states import Operation, ResourceState, StepStatus, WorkflowStatus
from innominatus.store import Store
from innominatus.workflows.definition import Step
from innominatus.workflows.policy import StepResult

if TYPE_CHECKING:
    from innominatus.metrics import Metrics

SUCCESS_STATE = {
    Operation.CREATE: ResourceState.ACTIVE,
    Operation.UPDATE: ResourceState.ACTIVE,
    Operation.DELETE: ResourceState.DELETED,
}


log = logging.getLogger(__name__)

T = TypeVar("T")

STEP_LOG_LIMIT = 2 * 1024 * 1024  # characters of logs a step keeps over all its attempts
_CUT = "[... earlier attempts' logs cut here: a step keeps 2 MiB ...]\n"


# The step writes, built once: building a statement and its cache key costs more than running it.
# Parameters are prefixed so none is taken for a column to SET.
_steps = WorkflowStep.__table__
_runs = WorkflowExecution.__table__
_THIS_STEP = (_steps.c.execution_id == bindparam("p_run")) & (_steps.c.position == bindparam("p_position"))
# Every write to the run's steps holds only while this engine still owns the run's lease with the
# token it claimed it under; after a takeover or a cancel the new owner's record stands.
_LEASE_HELD = (
    (_runs.c.id == bindparam("p_run"))
    & (_runs.c.status == WorkflowStatus.RUNNING)
    & (_runs.c.lease_owner == bindparam("p_owner"))
    & (_runs.c.lease_token == bindparam("p_token"))
)
_OURS = exists().where(_LEASE_HELD)
# The stored logs with an attempt's appended; past the step's limit, the middle goes (the first
# attempts' head stays, the newest attempt stays whole: it is at most policy.LOG_LIMIT).
_NEW_LOGS = bindparam("p_logs", type_=_steps.c.logs.type)
_LOGS = case(
    (
        func.length(_steps.c.logs) + bindparam("p_size") > STEP_LOG_LIMIT,
        func.substr(_steps.c.logs, 1, bindparam("p_head")) + _CUT + _NEW_LOGS,
    ),
    else_=_steps.c.logs + _NEW_LOGS,
)
_START = (
    update(_steps)
    .where(_THIS_STEP, _OURS)
    .values(
        status=StepStatus.RUNNING,
        attempts=_steps.c.attempts + 1,
        started_at=bindparam("p_now", type_=_steps.c.started_at.type),
        finished_at=None,
        error_message=None,
    )
    .returning(_steps.c.attempts)
)
_LOG_ATTEMPT = (
    update(_steps)
    .where(_THIS_STEP, _OURS)
    .values(logs=_LOGS, error_message=bindparam("p_error", type_=_steps.c.error_message.type))
    .returning(_steps.c.id)
)


def _result_values(prefix: str) -> dict[str, Any]:
    return {
        "logs": _LOGS,
        "error_message": bindparam(f"{prefix}error", type_=_steps.c.error_message.type),
        "status": bindparam(f"{prefix}status", type_=_steps.c.status.type),
        "outputs": bindparam(f"{prefix}outputs", type_=_steps.c.outputs.type),
        "finished_at": bindparam(f"{prefix}now", type_=_steps.c.finished_at.type),
    }


_RESULT_VALUES = _result_values("p_")
_RESULT = update(_steps).where(_THIS_STEP, _OURS).values(_RESULT_VALUES).returning(_steps.c.id)
# The run's finish checks the lease itself, in the same transaction.
_RESULT_UNFENCED = update(_steps).where(_THIS_STEP).values(_RESULT_VALUES).returning(_steps.c.id)


_LOCK_RESOURCE = select(Resource).where(Resource.id == bindparam("p_id")).with_for_update()
_FINISH = (
    update(_runs)
    .where(_LEASE_HELD)
    .values(
        status=bindparam("p_status", type_=_runs.c.status.type),
        error_message=bindparam("p_error", type_=_runs.c.error_message.type),
        finished_at=bindparam("p_now", type_=_runs.c.finished_at.type),
        lease_owner=None,
        lease_expires_at=None,
    )
    .returning(_runs.c.workflow_name)
)


def _result_if_finished(finished: Any, name: str) -> Any:
    """The last step's result as a WITH, written only if the run's finish (`finished`, a WITH) was. Its
    values are named apart (s_) from the run's own status and error."""
    return (
        update(_steps)
        .where(_THIS_STEP, exists(select(finished.c.workflow_name)))
        .values(_result_values("s_"))
        .returning(_steps.c.id)
        .cte(name)
    )


# PostgreSQL: the run's finish and its last step's result in one round trip, the step's result written only
# if the finish was (the lease held).
_FINISHED = _FINISH.cte("finished")
_LAST_RESULT = _result_if_finished(_FINISHED, "last_result")
_FINISH_WITH_RESULT = select(_FINISHED.c.workflow_name, select(_LAST_RESULT.c.id).scalar_subquery())
_APART = {"p_error": "s_error", "p_status": "s_status", "p_outputs": "s_outputs", "p_now": "s_now"}


# PostgreSQL, a create whose steps succeeded (nearly every run): the whole finish as one statement on its
# own, with no BEGIN, lock or COMMIT round trips of a transaction (five round trips become one). It writes
# what the general path writes: the resource is locked first (the system's lock order), and only while it
# is PROVISIONING; the run is finished only while this engine holds its lease; the last step's result,
# the resource's PROVISIONING → ACTIVE (as lifecycle.transition writes it) and its event only if the run
# was. When nothing matched, nothing was written, and the general path decides (it raises on what the
# state machine refuses).
_CREATED_FROM, _CREATED_TO = ResourceState.PROVISIONING, ResourceState.ACTIVE
lifecycle.require(_CREATED_FROM, _CREATED_TO)
_res = Resource.__table__
_LOCKED = (
    select(_res.c.id)
    .where(_res.c.id == bindparam("p_rid"), _res.c.state == _CREATED_FROM)
    .with_for_update()
    .cte("locked")
)
_CREATED_RUN = _FINISH.where(exists(select(_LOCKED.c.id))).cte("created_run")
_CREATED_STEP = _result_if_finished(_CREATED_RUN, "created_step")
_NOW = bindparam("p_now", type_=_res.c.updated_at.type)
_ACTIVATED = (
    update(_res)
    .where(_res.c.id == bindparam("p_rid"), exists(select(_CREATED_RUN.c.workflow_name)))
    .values(
        state=_CREATED_TO,
        updated_at=_NOW,
        error_message=None,
        outputs=bindparam("p_outputs", type_=_res.c.outputs.type),
    )
    .returning(*_res.c)
    .cte("activated")
)
_events = Event.__table__
_ACTIVATED_EVENT = (
    insert(_events)
    .from_select(
        ["resource_id", "application_name", "team", "from_state", "to_state", "reason", "at"],
        select(
            _ACTIVATED.c.id,
            _ACTIVATED.c.application_name,
            _ACTIVATED.c.team,
            literal(_CREATED_FROM.value),
            literal(_CREATED_TO.value),
            literal("workflow ") + _CREATED_RUN.c.workflow_name + literal(" succeeded"),
            _NOW,
        ).select_from(_ACTIVATED.join(_CREATED_RUN, true())),
    )
    .returning(_events.c.id, _events.c.reason)
    .cte("activated_event")
)
_FINISH_CREATED = select(
    *_ACTIVATED.c,
    _ACTIVATED_EVENT.c.id.label("event_id"),
    _ACTIVATED_EVENT.c.reason.label("event_reason"),
    select(_CREATED_STEP.c.id).scalar_subquery().label("step_id"),
).select_from(_ACTIVATED.join(_ACTIVATED_EVENT, true()))


def _log_parameters(logs: str) -> dict[str, Any]:
    return {"p_logs": logs, "p_size": len(logs), "p_head": max(STEP_LOG_LIMIT - len(logs) - len(_CUT), 0)}


class LeaseLost(Exception):
    """This engine no longer holds the run's lease (taken over, cancelled): its writes are refused."""


class StepRecorder:
    def __init__(self, store: Store, claim: Claim, worker_id: str, metrics: Metrics | None = None) -> None:
        self.store = store
        self.claim = claim
        self.worker_id = worker_id
        self.metrics = metrics
        self.outcome: str | None = None  # the run's final status, once `finish` stored it
        self._attempt_started = 0.0
        self.current: int | None = None
        self.attempt = 1
        self._unwritten: dict[str, Any] | None = None  # a final step result not stored yet (parameters)

    # ------------------------------------------------------------------------------- runner hooks

    async def attempt_started(self, index: int, step: Step) -> int:
        self.current = index
        self._attempt_started = time.monotonic()
        if index == self.claim.started_step:
            self.claim.started_step = None  # the claim's transaction recorded this first attempt
            attempt = 1
        else:
            async with self.store.transaction() as session:
                await self._write_unwritten(session)
                started = await direct.scalar(session, _START, {**self._ours(index), "p_now": utcnow()})
                attempt = int(self._accepted(started))
        self.attempt = attempt
        self._publish(index, StepStatus.RUNNING, attempt)
        return attempt

    async def attempt_finished(
        self, index: int, step: Step, attempt: int, result: StepResult, final: bool
    ) -> None:
        if self.metrics is not None:
            self.metrics.step_seconds.labels(type=step.type).observe(time.monotonic() - self._attempt_started)
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
        values = {**self._ours(index), **_log_parameters(logs), "p_error": error}
        status = StepStatus.RUNNING
        if final:
            status = StepStatus.SUCCEEDED if result.succeeded else StepStatus.FAILED
            values.update(
                p_status=status,
                p_outputs=self.store.box.seal(result.outputs, declared, secrets),
                p_now=utcnow(),
            )
            self._unwritten = values  # stored with the next write of this run
            self.current = None
        else:
            async with self.store.transaction() as session:
                self._accepted(await direct.scalar(session, _LOG_ATTEMPT, values))
        self._publish(index, status, attempt)

    async def log_line(self, index: int, stream: str, line: str) -> None:
        self._publish(index, StepStatus.RUNNING, self.attempt, mask(line, self.claim.secrets))

    # ------------------------------------------------------------------------------------ the end

    async def finish(self, *, outputs: dict[str, Any] | None, error: str | None) -> None:
        """The run's end, in one transaction. Locks follow the system's order (application for deletes,
        then resource, then execution), so it never deadlocks with the API."""
        claim = self.claim
        now = utcnow()
        declared = claim.workflow.definition.sensitive_outputs
        if outputs:
            claim.secrets |= secret_values(outputs, declared)
            outputs = self.store.box.seal(outputs, declared, claim.secrets)
        error = mask(error, claim.secrets)
        interrupted = self.current  # a step still running when the run ended (timeout, crash)
        if (
            error is None
            and claim.operation == Operation.CREATE
            and self._unwritten is not None
            and self.store.dialect == "postgresql"
            and await self._finish_created(outputs or {}, now)
        ):
            return
        async with self.store.transaction() as session:
            app = None
            if claim.operation == Operation.DELETE:
                app = await session.scalar(
                    select(Application)
                    .join(Resource, Resource.application_id == Application.id)
                    .where(Resource.id == claim.resource_id)
                    .with_for_update(of=Application)
                )
            resource = await direct.load(session, _LOCK_RESOURCE, {"p_id": claim.resource_id})
            if resource is None:
                return
            finish = {
                "p_run": claim.execution_id,
                "p_owner": self.worker_id,
                "p_token": claim.token,
                "p_status": WorkflowStatus.FAILED if error else WorkflowStatus.SUCCEEDED,
                "p_error": error,
                "p_now": now,
            }
            last = self._unwritten
            if last is not None and self.store.dialect == "postgresql":
                self._unwritten = None
                step = {_APART.get(key, key): value for key, value in last.items()}
                found = await direct.rows(session, _FINISH_WITH_RESULT, {**step, **finish})
                ours = found[0][0] if found else None
                if ours is not None:
                    self._accepted(found[0][1])
            else:
                ours = await direct.scalar(session, _FINISH, finish)
            if ours is None:
                return  # cancelled or taken over meanwhile: not ours to finish
            self.outcome = WorkflowStatus.FAILED if error else WorkflowStatus.SUCCEEDED
            await self._write_unwritten(session, fenced=False)
            if error:
                await self._close_steps(session, error, now)
                await lifecycle.transition(session, resource, ResourceState.FAILED, error)
            else:
                if claim.operation == Operation.CREATE:
                    resource.outputs = outputs or {}
                elif claim.operation == Operation.UPDATE:
                    resource.outputs = {**resource.outputs, **(outputs or {})}
                await lifecycle.transition(
                    session, resource, SUCCESS_STATE[Operation(claim.operation)], f"workflow {ours} succeeded"
                )
                if app is not None:
                    await finish_application_deletion(session, app)
        if error and interrupted is not None:
            self._publish(interrupted, StepStatus.FAILED, self.attempt)

    async def _finish_created(self, outputs: dict[str, Any], now: Any) -> bool:
        """PostgreSQL: a create that succeeded, finished by one statement (_FINISH_CREATED) and its event
        published; False when it did not apply, with nothing written."""
        assert self._unwritten is not None
        step = {_APART.get(key, key): value for key, value in self._unwritten.items()}
        claim = self.claim
        found = await direct.autocommit_rows(
            self.store.engine,
            _FINISH_CREATED,
            {
                **step,
                "p_rid": claim.resource_id,
                "p_run": claim.execution_id,
                "p_owner": self.worker_id,
                "p_token": claim.token,
                "p_status": WorkflowStatus.SUCCEEDED,
                "p_error": None,
                "p_now": now,
                "p_outputs": outputs,
            },
        )
        if not found:
            return False
        (row,) = found
        self._unwritten = None
        self.outcome = WorkflowStatus.SUCCEEDED
        if row.step_id is None:  # the run's own step row is gone: cannot happen while its run exists
            log.error(
                "execution %s finished, but the row of its step %s was not found",
                claim.execution_id,
                step["p_position"],
            )
        resource = Resource(**{column.key: getattr(row, column.key) for column in _res.c})
        event = Event(
            id=row.event_id,
            resource_id=resource.id,
            application_name=resource.application_name,
            team=resource.team,
            from_state=_CREATED_FROM.value,
            to_state=_CREATED_TO.value,
            reason=row.event_reason,
            at=now,
        )
        await self.store.publish_written([(event, resource)])
        return True

    async def _close_steps(self, session: AsyncSession, error: str, now: Any) -> None:
        """A failed run: the step still RUNNING (interrupted, timed out, or the run crashed) failed with
        it; steps that never ran are SKIPPED."""
        run_id = self.claim.execution_id
        if self.claim.started_step is not None:  # recorded as started by the claim, but never ran
            await session.execute(
                update(_steps)
                .where(_THIS_STEP)
                .values(status=StepStatus.PENDING, attempts=0, started_at=None),
                {"p_run": run_id, "p_position": self.claim.started_step},
            )
        await session.execute(
            update(WorkflowStep)
            .where(WorkflowStep.execution_id == run_id, WorkflowStep.status == StepStatus.RUNNING)
            .values(status=StepStatus.FAILED, error_message=error, finished_at=now)
        )
        await session.execute(
            update(WorkflowStep)
            .where(WorkflowStep.execution_id == run_id, WorkflowStep.status == StepStatus.PENDING)
            .values(status=StepStatus.SKIPPED)
        )

    # ---------------------------------------------------------------------------------------- shared

    async def _write_unwritten(self, session: AsyncSession, *, fenced: bool = True) -> None:
        """`fenced=False`: the caller has just checked the lease itself (the run's finish)."""
        if self._unwritten is not None:
            result = await direct.scalar(session, _RESULT if fenced else _RESULT_UNFENCED, self._unwritten)
            self._unwritten = None
            self._accepted(result)

    def _ours(self, index: int) -> dict[str, Any]:
        """The parameters naming step `index` of this run and the lease this engine claimed it under."""
        return {
            "p_run": self.claim.execution_id,
            "p_position": index,
            "p_owner": self.worker_id,
            "p_token": self.claim.token,
        }

    def _accepted(self, written: T | None) -> T:
        if written is None:
            raise LeaseLost(f"execution {self.claim.execution_id} is no longer this engine's to write")
        return written

    def _publish(self, index: int, status: str, attempts: int, line: str | None = None) -> None:
        self.store.publish_step(
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
