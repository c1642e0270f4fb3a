"""Spec submission, in one direction: parse (score.py, pure) → plan (plan.py: a pure diff of what is
stored against what the spec wants: new → create, changed → update, removed → delete, unchanged →
nothing) → apply (here, in one transaction). Nothing is stored unless every change can be made. When an engine is at hand, the new resources that
wait for nothing are claimed in the same transaction (their runs start once it commits)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from innominatus import lifecycle
from innominatus.auth import Principal
from innominatus.db.models import Application, ApplicationRevision, Resource, new_id, utcnow
from innominatus.operations import (
    application_resources,
    application_to_change,
    live_resources,
    remember_application,
    start_delete,
    start_update,
)
from innominatus.plan import Action, Plan, plan
from innominatus.problems import Problem
from innominatus.providers import Catalog, ResolveError
from innominatus.references import dependencies, find_cycle
from innominatus.score import ScoreResource, ScoreSpec, SpecError, parse_spec
from innominatus.states import Operation
from innominatus.states import ResourceState as S
from innominatus.store import Store

if TYPE_CHECKING:
    from innominatus.engine import Engine

_ATTEMPTS = 5


class Forbidden(PermissionError):
    """The spec names an application another team owns."""


@dataclass
class SubmitResult:
    application: Application
    resources: list[Resource]
    changed: bool  # False when the spec equals the current revision: no new revision stored
    created: list[Resource] = field(default_factory=list)  # of `resources`, those this submission made


def validate(text: str | bytes, catalog: Catalog | None) -> ScoreSpec:
    """The checks a submission passes before anything is looked up (also used offline by the CLI)."""
    known = catalog.known_types() if catalog is not None and catalog.providers else None
    spec = parse_spec(text, known_types=known)
    problems: list[Problem] = []
    cycle = find_cycle({name: dependencies(r.params) for name, r in spec.resources.items()})
    if cycle:
        problems.append(Problem(f"resources.{cycle[0]}", f"dependency cycle: {' → '.join(cycle)}"))
    if catalog is not None and catalog.providers:
        for name, resource in spec.resources.items():
            if catalog.provider_for(resource.type) is None:
                continue  # parse_spec reported it
            try:
                catalog.resolve(resource.type, Operation.CREATE, resource.class_)
            except ResolveError as exc:
                path = f"resources.{name}.class" if resource.class_ is not None else f"resources.{name}.type"
                problems.append(Problem(path, str(exc)))
    if problems:
        raise SpecError(problems)
    return spec


async def submit(
    store: Store,
    catalog: Catalog,
    text: str | bytes,
    *,
    caller: Principal | None = None,
    engine: Engine | None = None,
    before_writing: Callable[[], Awaitable[object]] | None = None,
) -> SubmitResult:
    """Store a spec for `caller` (None: trusted in-process use, e.g. tests and benchmarks).
    `before_writing` is awaited once the spec passed its checks, before the transaction begins."""
    spec = validate(text, catalog)
    spec_text = text.decode("utf-8") if isinstance(text, bytes) else text
    if before_writing is not None:
        await before_writing()
    for attempt in range(_ATTEMPTS):
        try:
            async with store.transaction() as session:
                result = await _apply(session, catalog, spec, spec_text, caller)
                if engine is not None:
                    await engine.claim_created(session, result.created)
            remember_application(store.engine.sync_engine, spec.name)
            return result
        except IntegrityError:
            # The application was stored meanwhile (a concurrent first submission won the insert) or
            # before, unknown here (operations.application_to_change); go again, now as a change.
            remember_application(store.engine.sync_engine, spec.name)
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def _apply(
    session: AsyncSession, catalog: Catalog, spec: ScoreSpec, spec_text: str, caller: Principal | None
) -> SubmitResult:
    now = utcnow()
    app = await application_to_change(session, spec.name)
    if app is not None and caller is not None and not caller.can_see(app.team):
        raise Forbidden(f"application '{spec.name}' belongs to another team")
    if app is not None and app.delete_requested_at is not None and app.deleted_at is None:
        raise SpecError(
            [Problem("metadata.name", f"application '{spec.name}' is being deleted; submit it again later")]
        )
    live = await live_resources(session, app.id, lock=True) if app is not None else {}
    stored_spec = app.spec if app is not None and app.deleted_at is None else None
    planned = plan(catalog, spec, stored_spec, live)

    first = app is None
    if app is None:
        team = caller.team if caller is not None else None
        app = Application(id=new_id(), name=spec.name, team=team, revision=0, created_at=now)
        session.add(app)
    if planned.new_revision:
        app.revision += 1
        app.spec = spec.document
        app.updated_at = now
        app.deleted_at = None
        app.delete_requested_at = None
        session.add(
            ApplicationRevision(
                application_id=app.id,
                revision=app.revision,
                spec=spec.document,
                spec_text=spec_text,
                created_at=now,
            )
        )
    created = await _carry_out(session, catalog, app, planned, live, now)
    if first:  # everything it has was made just now: nothing to read back
        return SubmitResult(app, sorted(created, key=lambda r: r.name), changed=True, created=created)
    resources = await application_resources(session, app.id)
    return SubmitResult(app, resources, changed=planned.new_revision, created=created)


async def _carry_out(
    session: AsyncSession,
    catalog: Catalog,
    app: Application,
    planned: Plan,
    live: dict[str, Resource],
    now: object,
) -> list[Resource]:
    """Apply the plan's changes, in its order; the resources it created."""
    created: list[Resource] = []
    for change in planned.changes:
        if change.action is Action.DELETE:
            await start_delete(session, catalog, live[change.name], reason="removed from spec")
            continue
        wanted = change.wanted
        assert wanted is not None
        deps = list(change.depends_on)
        if change.action is Action.CREATE:
            created.append(await _create(session, catalog, app, wanted, deps, now))
            continue
        current = live[change.name]
        current.depends_on = deps
        if change.action is Action.UPDATE:
            await start_update(session, catalog, current, wanted.params, wanted.class_)
        elif change.action in (Action.RETAKE, Action.REQUEUE):
            current.properties = wanted.params
            current.resource_class = wanted.class_
            if change.action is Action.REQUEUE:
                await lifecycle.transition(session, current, S.REQUESTED, "spec changed")
    return created


async def _create(
    session: AsyncSession,
    catalog: Catalog,
    app: Application,
    wanted: ScoreResource,
    deps: list[str],
    now: object,
) -> Resource:
    found = catalog.provider_for(wanted.type)
    resource = Resource(
        application_id=app.id,
        application_name=app.name,
        team=app.team,
        name=wanted.name,
        type=wanted.type,
        resource_class=wanted.class_,
        properties=wanted.params,
        depends_on=deps,
        provider=found[0].name if found else None,
        outputs={},
        created_at=now,
        updated_at=now,
    )
    await lifecycle.create(session, resource)
    return resource
