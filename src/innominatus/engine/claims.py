"""Claims: one transaction takes a bounded batch of work and records each run's start in it.

Work is (a) REQUESTED resources whose dependencies are ACTIVE (decided in SQL; the others are parked in
`waiting_for` so later passes never read them again), which move to PROVISIONING with a new execution
whose first step is already RUNNING; and (b) RUNNING executions nobody holds a live lease on: the
update/delete/retry runs the API created, and runs whose engine died, which resume where they stopped.

Rows are taken with FOR UPDATE SKIP LOCKED on PostgreSQL (SQLite's write lock serialises claims), so a
claim never waits for a row lock and several engines share the work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, literal_column, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from innominatus import lifecycle
from innominatus.db import clock
from innominatus.db.models import Application, Resource, WorkflowExecution, WorkflowStep, utcnow
from innominatus.executions import new_execution, steps_in
from innominatus.operations import live_resources
from innominatus.placeholders import find_references
from innominatus.providers import Catalog, ResolveError, WorkflowRef
from innominatus.references import LiveResource, MissingOutput, resolve_params
from innominatus.sealing import SecretBox, secret_values
from innominatus.states import Operation, ResourceState, WorkflowStatus

log = logging.getLogger(__name__)


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
    started_step: int | None = None  # the step whose first attempt the claim itself recorded as RUNNING
    requested_at: datetime | None = None  # when its resource became REQUESTED (a create's claim only)
    token: int = 0  # the lease's fencing token: every write of this run names it (engine/recorder.py)


# The first dependency of a resource that is not ACTIVE (NULL: ready), per dialect's JSON functions.
_BLOCKER = """(SELECT d.value FROM {elements} WHERE NOT EXISTS (
    SELECT 1 FROM resources AS dep WHERE dep.application_id = resources.application_id
    AND dep.name = d.value AND dep.state = 'ACTIVE' AND dep.state != 'DELETED') LIMIT 1)"""
_ELEMENTS = {
    "postgresql": "jsonb_array_elements_text(resources.depends_on) AS d(value)",
    "sqlite": "json_each(resources.depends_on) AS d",
}
_CLAIMABLE = "resources.state = 'REQUESTED' AND resources.waiting_for IS NULL"  # ix_resources_claimable
# Park only if the dependency is still not ACTIVE in this statement's view (it may have become so since
# the claim's select).
_PARK = text(
    "UPDATE resources SET waiting_for = :dep WHERE id = :id AND NOT EXISTS (SELECT 1 FROM resources AS dep "
    "WHERE dep.application_id = :app AND dep.name = :dep AND dep.state = 'ACTIVE' AND dep.state != 'DELETED')"
)
# After the claim committed: a dependency that became ACTIVE while the park was not yet committed was
# released by a numbering pass that could not see the park (PostgreSQL only; SQLite runs writers alone).
_UNPARK = text(
    "UPDATE resources SET waiting_for = NULL WHERE id IN :ids AND EXISTS (SELECT 1 FROM resources AS dep "
    "WHERE dep.application_id = resources.application_id AND dep.name = resources.waiting_for "
    "AND dep.state = 'ACTIVE' AND dep.state != 'DELETED')"
).bindparams(bindparam("ids", expanding=True))


# Whether a claim pass would find any REQUESTED resource (one indexed row read, outside any transaction).
ANY_CLAIMABLE = select(Resource.id).where(text(_CLAIMABLE)).limit(1)


class Claimer:
    def __init__(self, box: SecretBox, dialect: str, worker_id: str, lease: timedelta) -> None:
        self.box = box
        self.dialect = dialect
        self.postgres = dialect == "postgresql"
        self.worker_id = worker_id
        self.lease = lease
        self.parked: list[str] = []  # parked by claims whose recheck is due (PostgreSQL)
        self.batch_full = False  # the last `requested` read as many rows as it could
        self.runs_seen: set[str] = set()  # the executions the last `runs` read
        # The engine's free slots for rows a pass just read, reserved at once; without an engine, all.
        self.grant: Callable[[int], int] = lambda wanted: wanted
        self.runs_trimmed = False  # the last `runs` left waiting runs for want of a slot
        elements = _ELEMENTS["postgresql" if self.postgres else "sqlite"]
        self._blocker = literal_column(_BLOCKER.format(elements=elements)).label("blocker")

    def _locking(self, query: Any, *of: Any) -> Any:
        return query.with_for_update(skip_locked=True, of=of or None) if self.postgres else query

    # ------------------------------------------------------------------------------ requested resources

    async def requested(self, session: AsyncSession, catalog: Catalog, limit: int) -> list[Claim]:
        query = self._locking(
            select(Resource, self._blocker)
            .where(text(_CLAIMABLE))
            .order_by(Resource.created_at)
            .limit(limit),
            Resource,
        )
        rows = (await session.execute(query)).all()
        self.batch_full = len(rows) == limit  # more may wait, even if this batch was all parked
        parked = [
            {"id": r.id, "app": r.application_id, "dep": blocker}
            for r, blocker in rows
            if blocker is not None
        ]
        if parked:
            await session.execute(_PARK, parked)
            self.parked.extend(p["id"] for p in parked)
        ready = [r for r, blocker in rows if blocker is None]
        granted = self.grant(len(ready))
        if granted < len(ready):  # submissions took slots while the rows were read: the rest waits
            ready = ready[:granted]
            self.batch_full = True
        return await self.start(session, catalog, ready)

    async def start(self, session: AsyncSession, catalog: Catalog, ready: list[Resource]) -> list[Claim]:
        """Start the create runs of REQUESTED resources whose dependencies are ACTIVE (rows this
        transaction holds): PROVISIONING, with an execution whose first step is RUNNING."""
        metadata, siblings = await self._context(session, ready)
        claims: list[Claim] = []
        for resource in ready:
            requested_at = resource.updated_at  # its last transition: to REQUESTED
            try:
                resolution = catalog.resolve(resource.type, Operation.CREATE, resource.resource_class)
                live = siblings.get(resource.application_id, {})
                inputs = self._inputs(resource, metadata.get(resource.application_id, {}), live)
            except (ResolveError, MissingOutput, ValueError) as exc:  # ValueError: unreadable sealed outputs
                await lifecycle.transition(session, resource, ResourceState.FAILED, str(exc))
                continue
            execution = new_execution(
                session,
                resource,
                resolution.workflow,
                resolution.provider.name,
                Operation.CREATE,
                inputs=self.box.seal_all(inputs),
                lease_owner=self.worker_id,
                lease_until=clock.later(self.dialect, self.lease),
                started=True,
            )
            await lifecycle.transition(
                session, resource, ResourceState.PROVISIONING, f"workflow {resolution.workflow.name} started"
            )
            claim = self._claim_for(resource, execution, resolution.workflow, [], inputs, live)
            claim.started_step = 0 if resolution.workflow.definition.steps else None
            claim.requested_at = requested_at
            claims.append(claim)
        return claims

    async def _context(
        self, session: AsyncSession, resources: list[Resource]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Resource]]]:
        """Metadata and live siblings, loaded only for the applications whose placeholders need them."""
        want_metadata: set[str] = set()
        want_siblings: set[str] = set()
        for resource in resources:
            if resource.depends_on:
                want_siblings.add(resource.application_id)
            if any(ref.root == "metadata" for ref in find_references(resource.properties)):
                want_metadata.add(resource.application_id)
        metadata: dict[str, dict[str, Any]] = {}
        if want_metadata:
            for app_id, spec in await session.execute(
                select(Application.id, Application.spec).where(Application.id.in_(want_metadata))
            ):
                metadata[app_id] = (spec or {}).get("metadata") or {}
        siblings: dict[str, dict[str, Resource]] = {}
        if want_siblings:
            for row in await session.scalars(
                select(Resource).where(
                    Resource.application_id.in_(want_siblings), Resource.state != ResourceState.DELETED
                )
            ):
                siblings.setdefault(row.application_id, {})[row.name] = row
        return metadata, siblings

    def _inputs(
        self, resource: Resource, metadata: dict[str, Any], siblings: dict[str, Resource]
    ) -> dict[str, Any]:
        """The workflow's inputs: the properties with placeholders resolved, plus who is asking."""
        live = {n: LiveResource(r.id, r.state, self.box.open(r.outputs)) for n, r in siblings.items()}
        return {
            **resolve_params(resource.properties, metadata, live),
            "app_name": resource.application_name,
            "resource_name": resource.name,
            "resource_type": resource.type,
        }

    async def recheck_parked(self, session: AsyncSession) -> bool:
        """Release what this engine parked behind a dependency that is ACTIVE by now; True if any."""
        ids, self.parked = self.parked, []
        if not ids or not self.postgres:
            return False
        result = await session.execute(_UNPARK, {"ids": ids})
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # ----------------------------------------------------------------------------- unleased executions

    async def runs(
        self, session: AsyncSession, catalog: Catalog, limit: int, running: set[str]
    ) -> list[Claim]:
        query = self._locking(
            select(WorkflowExecution, Resource)
            .join(Resource, Resource.id == WorkflowExecution.resource_id)
            .where(*self._waiting_runs())
            .order_by(WorkflowExecution.started_at)
            .limit(limit),
            Resource,
            WorkflowExecution,
        )
        found = (await session.execute(query)).all()
        self.runs_seen = {e.id for e, _ in found}
        rows = [(e, r) for e, r in found if e.id not in running]
        granted = self.grant(len(rows))
        self.runs_trimmed = granted < len(rows)
        rows = rows[:granted]
        steps = await steps_in(session, [e.id for e, _ in rows])
        siblings: dict[str, dict[str, Resource]] = {}  # per application, once per pass
        claims: list[Claim] = []
        for execution, resource in rows:
            if resource.application_id not in siblings:
                siblings[resource.application_id] = await live_resources(session, resource.application_id)
            try:
                claim = await self._claim_run(
                    session, catalog, execution, resource, siblings[resource.application_id], steps
                )
            except ValueError as exc:  # sealed inputs or outputs that this server's key cannot open
                claim = None
                await fail_unclaimed(
                    session,
                    execution,
                    resource,
                    f"{exc} (was INNOMINATUS_SECRET_KEY or its key file changed?)",
                )
            if claim is not None:
                claims.append(claim)
        return claims

    def runs_unseen(self, seen: set[str]) -> Any:
        """A one-row read: a run waiting for an engine that is not in `seen`. On PostgreSQL a pass skips
        rows another transaction has locked (a refused update holds its resource for a moment): such a
        run is still waiting, and nothing else will announce it."""
        return (
            select(WorkflowExecution.id)
            .where(*self._waiting_runs(), WorkflowExecution.id.not_in(seen))
            .limit(1)
        )

    def _waiting_runs(self) -> tuple[Any, ...]:
        """A run waits for an engine: it runs, and nobody holds its lease. Expiry is judged by the
        database's clock: replicas' clocks may differ, the database's is one."""
        return (
            WorkflowExecution.status == WorkflowStatus.RUNNING,
            or_(
                WorkflowExecution.lease_owner.is_(None),
                WorkflowExecution.lease_expires_at < clock.now(self.dialect),
            ),
        )

    async def _claim_run(
        self,
        session: AsyncSession,
        catalog: Catalog,
        execution: WorkflowExecution,
        resource: Resource,
        siblings: dict[str, Resource],
        steps: dict[str, list[WorkflowStep]],
    ) -> Claim | None:
        if execution.operation == Operation.DELETE and any(
            resource.name in other.depends_on for other in siblings.values() if other.id != resource.id
        ):
            return None  # dependents go first
        provider = catalog.providers.get(execution.provider)
        workflow = provider.workflows.get(execution.workflow_name) if provider else None
        if workflow is None:
            await fail_unclaimed(
                session,
                execution,
                resource,
                f"workflow '{execution.workflow_name}' of provider '{execution.provider}' is no longer loaded",
            )
            return None
        if execution.inputs:
            inputs = self.box.open_all(execution.inputs)
        else:
            try:
                app = await session.get(Application, resource.application_id)
                metadata = (app.spec.get("metadata") if app else None) or {}
                inputs = self._inputs(resource, metadata, siblings)
            except MissingOutput as exc:
                await fail_unclaimed(session, execution, resource, str(exc))
                return None
            execution.inputs = self.box.seal_all(inputs)
        if execution.lease_owner is not None:
            log.info(
                "resuming execution %s of %s (its engine stopped)", execution.id, execution.workflow_name
            )
        execution.lease_owner = self.worker_id
        execution.lease_expires_at = clock.later(self.dialect, self.lease)
        execution.lease_token += 1  # the previous owner's writes are refused from now on
        execution.runner = self.worker_id
        rows = [
            {"status": s.status, "outputs": self.box.open(s.outputs), "attempts": s.attempts}
            for s in steps.get(execution.id, [])
        ]
        return self._claim_for(resource, execution, workflow, rows, inputs, siblings)

    async def next_expiry(self, session: AsyncSession) -> float | None:
        """In how many seconds the earliest lease another engine holds runs out, by the database's clock
        (its run may then need resuming); None when there is none."""
        earliest = (
            select(func.min(WorkflowExecution.lease_expires_at))
            .where(
                WorkflowExecution.status == WorkflowStatus.RUNNING,
                WorkflowExecution.lease_owner.is_not(None),
                WorkflowExecution.lease_owner != self.worker_id,
            )
            .scalar_subquery()
        )
        if self.postgres:
            seconds = await session.scalar(select(func.extract("epoch", earliest - clock.now(self.dialect))))
            return None if seconds is None else float(seconds)
        moment = await session.scalar(select(earliest))  # UTCDateTime: an aware datetime
        return None if moment is None else (moment - utcnow()).total_seconds()

    # ----------------------------------------------------------------------------------------- leases

    async def renew(self, session: AsyncSession, running: set[str]) -> set[str]:
        """Renew this engine's leases; returns the runs among `running` that are no longer ours
        (cancelled or taken over). Locked rows are skipped, never waited for (no lock cycles with the
        API, which locks resource, then execution)."""
        mine = (
            select(WorkflowExecution.id)
            .where(
                WorkflowExecution.lease_owner == self.worker_id,
                WorkflowExecution.status == WorkflowStatus.RUNNING,
            )
            .with_for_update(
                skip_locked=True
            )  # dropped by SQLAlchemy on SQLite, where the write lock is held
        )
        await session.execute(
            update(WorkflowExecution)
            .where(WorkflowExecution.id.in_(mine.scalar_subquery()))
            .values(lease_expires_at=clock.later(self.dialect, self.lease))
            .execution_options(synchronize_session=False)
        )
        still = set(
            await session.scalars(
                select(WorkflowExecution.id).where(
                    WorkflowExecution.id.in_(bindparam("ids", expanding=True)),
                    WorkflowExecution.lease_owner == self.worker_id,
                    WorkflowExecution.status == WorkflowStatus.RUNNING,
                ),
                {"ids": list(running)},
            )
        )
        return running - still

    # ------------------------------------------------------------------------------------------ shared

    def _claim_for(
        self,
        resource: Resource,
        execution: WorkflowExecution,
        workflow: WorkflowRef,
        steps: list[dict[str, Any]],
        inputs: dict[str, Any],
        siblings: dict[str, Resource],
    ) -> Claim:
        declared = workflow.definition.sensitive_outputs
        outputs = self.box.open(resource.outputs)
        known = secret_values(inputs, declared) | secret_values(outputs, declared)
        for sibling in siblings.values():
            known |= secret_values(self.box.open(sibling.outputs))
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
            token=execution.lease_token,
        )


async def fail_unclaimed(
    session: AsyncSession, execution: WorkflowExecution, resource: Resource, error: str
) -> None:
    execution.status = WorkflowStatus.FAILED
    execution.error_message = error
    execution.finished_at = utcnow()
    await lifecycle.transition(session, resource, ResourceState.FAILED, error)
