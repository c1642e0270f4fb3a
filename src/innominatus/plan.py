"""Planning a submission: a pure diff of what is stored against what a spec wants.

Given the stored resources of an application (read, never written here) and a parsed spec, `plan`
says what the submission will do to each resource, or refuses with every reason at once (SpecError)
before anything is written. `specs.py` reads the stored rows, plans and applies the plan in one
transaction: parse (score.py) → plan (here) → apply (specs.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from innominatus.db.models import Resource
from innominatus.operations import BUSY, OperationError, busy_problem, check_deletable, workflow_for
from innominatus.problems import Problem
from innominatus.providers import Catalog
from innominatus.references import dependencies
from innominatus.score import ScoreResource, ScoreSpec, SpecError
from innominatus.states import Operation
from innominatus.states import ResourceState as S


class Action(Enum):
    CREATE = "create"  # new in the spec
    UPDATE = "update"  # ACTIVE and changed: its update workflow runs
    RETAKE = "retake"  # REQUESTED and changed: it takes the new values before it starts
    REQUEUE = "requeue"  # FAILED and changed: it is requested again with the new values
    KEEP = "keep"  # unchanged: only what it depends on is refreshed
    DELETE = "delete"  # gone from the spec: its delete workflow runs


@dataclass(frozen=True)
class Change:
    action: Action
    name: str
    wanted: ScoreResource | None  # None for DELETE
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]  # the spec's resources in its order, then the deletions
    new_revision: bool  # the spec differs from the stored one (or there is none): a revision is stored


def plan(
    catalog: Catalog,
    spec: ScoreSpec,
    stored_spec: Mapping[str, Any] | None,
    live: Mapping[str, Resource],
) -> Plan:
    """`stored_spec`: the application's current spec (None when there is none, or it was deleted);
    `live`: its resources that are not DELETED, by name."""
    _refuse_what_cannot_change(catalog, spec, live)
    changes: list[Change] = []
    for name, wanted in spec.resources.items():
        current = live.get(name)
        deps = tuple(sorted(dependencies(wanted.params)))
        if current is None:
            action = Action.CREATE
        elif not differs(current, wanted):
            action = Action.KEEP
        elif current.state == S.ACTIVE:
            action = Action.UPDATE
        elif current.state == S.FAILED:
            action = Action.REQUEUE
        else:
            action = Action.RETAKE  # REQUESTED: not started yet
        changes.append(Change(action, name, wanted, deps))
    changes += [Change(Action.DELETE, name, None) for name in live if name not in spec.resources]
    new_revision = stored_spec is None or dict(stored_spec) != spec.document
    return Plan(tuple(changes), new_revision)


def differs(current: Resource, wanted: ScoreResource) -> bool:
    # Compared as written: placeholders stay unresolved on both sides.
    return current.properties != wanted.params or current.resource_class != wanted.class_


def _refuse_what_cannot_change(catalog: Catalog, spec: ScoreSpec, live: Mapping[str, Resource]) -> None:
    """Every reason the diff cannot be applied, as one refusal, before anything is written."""
    problems: list[Problem] = []
    for name, current in live.items():
        wanted = spec.resources.get(name)
        try:
            if wanted is None:
                check_deletable(catalog, current)
            elif current.type != wanted.type:
                problems.append(
                    Problem(
                        f"resources.{name}.type",
                        f"cannot change the type of resource '{name}' from '{current.type}' to "
                        f"'{wanted.type}'; remove it and add it under another name",
                    )
                )
            elif differs(current, wanted) and current.state in BUSY:
                problems.append(busy_problem(current))
            elif differs(current, wanted) and current.state == S.ACTIVE:
                workflow_for(catalog, current, Operation.UPDATE, wanted.class_)
        except OperationError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)
