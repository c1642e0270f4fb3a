"""Spec submission: a parsed Score spec becomes an application revision and resource rows, in one
transaction. Nothing is stored unless the whole spec is valid."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from innominatus import lifecycle
from innominatus.db.models import Application, ApplicationRevision, Resource, utcnow
from innominatus.problems import Problem
from innominatus.providers import Catalog, ResolveError
from innominatus.score import ScoreSpec, SpecError, parse_spec
from innominatus.states import Operation
from innominatus.store import Store

_ATTEMPTS = 5


@dataclass
class SubmitResult:
    application: Application
    resources: list[Resource]
    changed: bool  # False when the spec equals the current revision: nothing stored, nothing runs


def validate(text: str | bytes, catalog: Catalog | None) -> ScoreSpec:
    """The checks a submission passes before anything is stored (also used offline by the CLI)."""
    known = catalog.known_types() if catalog is not None and catalog.providers else None
    spec = parse_spec(text, known_types=known)
    if catalog is None or not catalog.providers:
        return spec
    problems: list[Problem] = []
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
    store: Store, catalog: Catalog, text: str | bytes, *, team: str | None = None
) -> SubmitResult:
    spec = validate(text, catalog)
    spec_text = text.decode("utf-8") if isinstance(text, bytes) else text
    for attempt in range(_ATTEMPTS):
        try:
            return await _store(store, catalog, spec, spec_text, team)
        except IntegrityError:
            # A concurrent first submission of the same app won the insert; go again, now as an update.
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def _store(
    store: Store, catalog: Catalog, spec: ScoreSpec, spec_text: str, team: str | None
) -> SubmitResult:
    async with store.transaction() as session:
        query = select(Application).where(Application.name == spec.name)
        if store.dialect == "postgresql":
            query = query.with_for_update()
        app = await session.scalar(query)
        now = utcnow()
        if app is None:
            app = Application(
                name=spec.name, team=team, revision=1, spec=spec.document, created_at=now, updated_at=now
            )
            session.add(app)
            await session.flush()
        elif app.spec == spec.document and app.deleted_at is None:
            resources = await _resources(session, app.id)
            return SubmitResult(app, resources, changed=False)
        else:
            app.revision += 1
            app.spec = spec.document
            app.updated_at = now
            app.deleted_at = None
        session.add(
            ApplicationRevision(
                application_id=app.id,
                revision=app.revision,
                spec=spec.document,
                spec_text=spec_text,
                created_at=now,
            )
        )
        existing = {r.name: r for r in await _resources(session, app.id)}
        for name, wanted in spec.resources.items():
            if name in existing:
                continue  # changes and removals are the lifecycle's (update/delete workflows)
            found = catalog.provider_for(wanted.type)
            resource = Resource(
                application_id=app.id,
                application_name=app.name,
                name=name,
                type=wanted.type,
                resource_class=wanted.class_,
                properties=wanted.params,
                provider=found[0].name if found else None,
                outputs={},
                created_at=now,
                updated_at=now,
            )
            await lifecycle.create(session, resource, team=app.team)
        resources = await _resources(session, app.id)
        return SubmitResult(app, resources, changed=True)


async def _resources(session, application_id: str) -> list[Resource]:  # type: ignore[no-untyped-def]
    rows = await session.scalars(
        select(Resource)
        .where(Resource.application_id == application_id)
        .order_by(Resource.created_at, Resource.name)
    )
    return list(rows)
