"""The operations users start on stored resources: update, delete (one resource or a whole
application) and retry. Each runs inside the caller's transaction; the engine picks up the
execution rows they create. Refusals raise OperationError and change nothing."""

from __future__ import annotations

import weakref
from collections.abc import Iterable

from sqlalchemy import Connection, Engine, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from innominatus import lifecycle
from innominatus.db import direct
from innominatus.db.models import Application, Resource, WorkflowExecution, utcnow
from innominatus.executions import cancel_execution, new_execution, retry_execution
from innominatus.problems import Problem
from innominatus.providers import Catalog, ResolveError, WorkflowRef
from innominatus.references import dependencies, find_cycle
from innominatus.states import Operation, WorkflowStatus
from innominatus.states import ResourceState as S

BUSY = (S.PROVISIONING, S.UPDATING, S.DELETING)
STATE_AFTER_RETRY = {
    Operation.CREATE: S.PROVISIONING,
    Operation.UPDATE: S.UPDATING,
    Operation.DELETE: S.DELETING,
}


class OperationError(Exception):
    """A refused request (BAD_USER_INPUT); `problems` say what and where."""

    def __init__(self, message: str, problems: Iterable[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class NotFound(LookupError):
    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} '{key}' not found")
        self.kind = kind
        self.key = key


async def lock_application(session: AsyncSession, name: str) -> Application | None:
    """The application row, locked for the rest of the transaction (so racing changes queue up)."""
    return await direct.load(session, _LOCK_APPLICATION, {"p_name": name})


# Built once. SQLAlchemy drops FOR UPDATE on SQLite, whose writer holds the whole file's lock anyway.
_LOCK_APPLICATION = select(Application).where(Application.name == bindparam("p_name")).with_for_update()
_KNOWN_KEPT = 10_000
# PostgreSQL: application names seen stored, per database (engine), for `application_to_change`.
_known: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()


async def application_to_change(session: AsyncSession, name: str) -> Application | None:
    """As `lock_application`, for a change that may create the application. On PostgreSQL, a name this
    process has not seen stored is taken for a new application, without a look-up: its submission's
    writes are then all of its transaction and go out as one statement, with no BEGIN or COMMIT
    (db/writes.py). If the application exists after all (stored by another replica, or before a
    restart), the statement's insert of it fails on the unique name and writes nothing, and the
    submission goes again as a change (`remember_application` first), as when two first submissions
    race. Applications known here, the usual case, are locked at once."""
    known = _known_names(session.get_bind())
    if known is not None and name not in known:
        return None
    return await lock_application(session, name)


def remember_application(bind: Engine, name: str) -> None:
    """The application `name` is stored in `bind`'s database (after its first submission committed, or
    when an insert of it failed): changes to it lock it first."""
    known = _known_names(bind)
    if known is not None:
        if len(known) >= _KNOWN_KEPT:
            known.clear()  # a backstop: a name forgotten costs one failed insert, nothing else
        known.add(name)


def _known_names(bind: Engine | Connection) -> set[str] | None:
    """PostgreSQL: the application names this process has seen stored in the database."""
    if bind.dialect.name != "postgresql":
        return None
    return _known.setdefault(bind.engine, set())


async def application_resources(
    session: AsyncSession, application_id: str, *, live_only: bool = False, lock: bool = False
) -> list[Resource]:
    """An application's resources in creation order; `live_only` leaves the DELETED history out.

    `lock`: for changing them. Rows are locked (and read fresh) in the system's lock order: application,
    then its resources, then their executions; the engine follows the same order, so nothing deadlocks.
    """
    query = select(Resource).where(Resource.application_id == application_id)
    if live_only:
        query = query.where(Resource.state != S.DELETED)
    if lock:  # (SQLAlchemy drops FOR UPDATE on SQLite, where the transaction holds the write lock)
        query = query.with_for_update().execution_options(populate_existing=True)
    return list(await session.scalars(query.order_by(Resource.created_at, Resource.name)))


async def live_resources(
    session: AsyncSession, application_id: str, *, lock: bool = False
) -> dict[str, Resource]:
    return {
        r.name: r for r in await application_resources(session, application_id, live_only=True, lock=lock)
    }


def workflow_for(
    catalog: Catalog, resource: Resource, operation: str, resource_class: str | None
) -> WorkflowRef:
    """The workflow for an operation, or OperationError naming resource, type, provider and operation."""
    try:
        return catalog.resolve(resource.type, operation, resource_class).workflow
    except ResolveError as exc:
        provider = catalog.provider_for(resource.type)
        who = f"provider '{provider[0].name}'" if provider else "no provider"
        raise OperationError(
            f"cannot {operation} resource '{resource.name}' (type '{resource.type}', {who}): {exc}",
            [Problem(f"resources.{resource.name}", f"no {operation} workflow: {exc}")],
        ) from None


def busy_problem(resource: Resource, path: str | None = None) -> Problem:
    return Problem(
        path or f"resources.{resource.name}",
        f"resource '{resource.name}' is {resource.state}; it can change once it is ACTIVE or FAILED",
    )


# ------------------------------------------------------------------------------------------- update


async def start_update(
    session: AsyncSession, catalog: Catalog, resource: Resource, properties: dict, resource_class: str | None
) -> None:
    """ACTIVE → UPDATING with the new properties; the update workflow waits for an engine."""
    workflow = workflow_for(catalog, resource, Operation.UPDATE, resource_class)
    resource.properties = properties
    resource.resource_class = resource_class
    new_execution(session, resource, workflow, _provider(catalog, resource), Operation.UPDATE)
    await lifecycle.transition(session, resource, S.UPDATING, f"update with workflow {workflow.name}")


async def update_properties(
    session: AsyncSession, catalog: Catalog, app: Application, resource: Resource, properties: dict
) -> None:
    """`updateResource`: merge into the current properties and run the update workflow."""
    if resource.state != S.ACTIVE:
        raise OperationError(
            f"resource '{resource.name}' is {resource.state}; only an ACTIVE resource can be updated",
            [Problem("id", f"resource is {resource.state}, not ACTIVE")],
        )
    merged = {**resource.properties, **properties}
    if merged == resource.properties:
        return  # nothing changes, nothing runs
    siblings = await live_resources(session, app.id)
    deps = dependencies(merged)
    unknown = sorted(d for d in deps if d not in siblings or d == resource.name)
    if unknown:
        raise OperationError(
            f"properties reference resources that are not in application '{app.name}': {', '.join(unknown)}",
            [Problem("properties", f"references unknown resource '{name}'") for name in unknown],
        )
    graph = {name: set(r.depends_on) for name, r in siblings.items()} | {resource.name: deps}
    cycle = find_cycle(graph)
    if cycle:
        raise OperationError(
            f"dependency cycle: {' → '.join(cycle)}", [Problem("properties", "dependency cycle")]
        )
    await start_update(session, catalog, resource, merged, resource.resource_class)
    resource.depends_on = sorted(deps)


# ------------------------------------------------------------------------------------------- delete


def check_deletable(catalog: Catalog, resource: Resource) -> None:
    """Refuse (OperationError) when a resource that exists somewhere has no delete workflow."""
    if resource.state in (S.REQUESTED, S.DELETING, S.DELETED):
        return
    workflow_for(catalog, resource, Operation.DELETE, resource.resource_class)


async def start_delete(
    session: AsyncSession,
    catalog: Catalog,
    resource: Resource,
    *,
    reason: str,
    without_workflow_ok: bool = False,
) -> None:
    """Delete a resource: cancel what runs for it, then run its delete workflow (engine)."""
    state = S(resource.state)
    if state in (S.DELETING, S.DELETED):
        return
    if state is S.REQUESTED:
        await lifecycle.transition(session, resource, S.DELETED, f"{reason} before it was provisioned")
        return
    try:
        workflow = workflow_for(catalog, resource, Operation.DELETE, resource.resource_class)
    except OperationError:
        if not without_workflow_ok:
            raise
        workflow = None
    if state in (S.PROVISIONING, S.UPDATING):
        running = await session.get(WorkflowExecution, resource.workflow_execution_id)
        if running is not None and running.status == WorkflowStatus.RUNNING:
            await cancel_execution(session, running, f"cancelled: {reason}")
    if workflow is None:
        await lifecycle.transition(session, resource, S.DELETING, reason)
        await lifecycle.transition(session, resource, S.DELETED, "no delete workflow")
        return
    new_execution(session, resource, workflow, _provider(catalog, resource), Operation.DELETE)
    await lifecycle.transition(session, resource, S.DELETING, f"{reason}: workflow {workflow.name}")


async def delete_application(session: AsyncSession, catalog: Catalog, app: Application) -> None:
    """Every resource's delete workflow (the engine runs dependents first), then the app goes."""
    if app.deleted_at is not None:
        raise NotFound("application", app.name)
    for resource in (await live_resources(session, app.id, lock=True)).values():
        await start_delete(session, catalog, resource, reason="application deleted", without_workflow_ok=True)
    app.delete_requested_at = app.delete_requested_at or utcnow()
    await finish_application_deletion(session, app)


async def finish_application_deletion(session: AsyncSession, app: Application) -> None:
    """Once every resource of an application being deleted is DELETED, it leaves `applications`."""
    if app.delete_requested_at is None or app.deleted_at is not None:
        return
    if not await live_resources(session, app.id):
        app.deleted_at = utcnow()


# -------------------------------------------------------------------------------------------- retry


async def retry(session: AsyncSession, resource: Resource) -> None:
    """Re-run a FAILED resource's last workflow from its first failed step."""
    if resource.state != S.FAILED:
        raise OperationError(
            f"resource '{resource.name}' is {resource.state}; only a FAILED resource can be retried",
            [Problem("id", f"resource is {resource.state}, not FAILED")],
        )
    last = (
        await session.get(WorkflowExecution, resource.workflow_execution_id)
        if resource.workflow_execution_id
        else None
    )
    if last is None or last.status not in (WorkflowStatus.FAILED, WorkflowStatus.CANCELLED):
        # It failed before any workflow ran (e.g. a missing output it depends on): request it again.
        await lifecycle.transition(session, resource, S.REQUESTED, "retry requested")
        return
    execution = await retry_execution(session, resource, last)
    await lifecycle.transition(
        session,
        resource,
        STATE_AFTER_RETRY[Operation(last.operation)],
        f"retry of {last.workflow_name} ({last.id}) as {execution.id}",
    )


def _provider(catalog: Catalog, resource: Resource) -> str:
    found = catalog.provider_for(resource.type)
    return found[0].name if found else (resource.provider or "")
