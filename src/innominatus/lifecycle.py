"""THE resource state machine: which transitions exist, and what each one writes.

Every change of a resource's state goes through `transition` (or `create` for the first one), which
writes the audit row and the durable event row in the caller's transaction. Once that transaction
commits, the sequencer gives the events their stream positions and publishes them (see
store.Store.transaction and events.sequencer); `release_dependents` is its reaction to ACTIVE ones.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession

from innominatus.db import direct
from innominatus.db.models import Event, Resource, new_id, utcnow
from innominatus.states import ResourceState as S

ALLOWED: dict[S | None, frozenset[S]] = {
    None: frozenset({S.REQUESTED}),
    S.REQUESTED: frozenset({S.PROVISIONING, S.FAILED, S.DELETED}),
    S.PROVISIONING: frozenset({S.ACTIVE, S.FAILED, S.DELETING}),
    S.ACTIVE: frozenset({S.UPDATING, S.DELETING}),
    S.UPDATING: frozenset({S.ACTIVE, S.FAILED, S.DELETING}),
    S.DELETING: frozenset({S.DELETED, S.FAILED}),
    S.FAILED: frozenset({S.REQUESTED, S.PROVISIONING, S.UPDATING, S.DELETING, S.DELETED}),
    S.DELETED: frozenset(),
}

WROTE_EVENTS = "innominatus.wrote_events"  # session.info: [(event, resource)] for the sequencer


class IllegalTransition(RuntimeError):
    """A bug: some code asked for a state change the machine does not have."""


def can_transition(from_state: S | None, to_state: S) -> bool:
    return to_state in ALLOWED[from_state]


def require(from_state: S | None, to_state: S) -> None:
    """For code that writes a transition itself (one statement, engine/recorder.py): the machine has it."""
    if not can_transition(from_state, to_state):
        raise IllegalTransition(f"{from_state} → {to_state} is not allowed")


async def transition(
    session: AsyncSession,
    resource: Resource,
    to_state: S,
    reason: str | None = None,
) -> Event:
    from_state = S(resource.state) if resource.state is not None else None
    if not can_transition(from_state, to_state):
        raise IllegalTransition(f"resource {resource.id}: {from_state} → {to_state} is not allowed")
    now = utcnow()
    resource.state = to_state.value
    resource.updated_at = now
    if to_state is not S.FAILED:
        resource.error_message = None
    else:
        resource.error_message = reason
    if to_state is S.REQUESTED:
        resource.waiting_for = None  # claims check its dependencies afresh
    event = Event(
        resource_id=resource.id,
        application_name=resource.application_name,
        team=resource.team,
        from_state=from_state,
        to_state=to_state,
        reason=reason,
        at=now,
    )
    session.add(event)
    session.info.setdefault(WROTE_EVENTS, []).append((event, resource))
    return event


async def create(session: AsyncSession, resource: Resource) -> Event:
    """Record a new resource: its first event goes from nothing to REQUESTED."""
    if resource.id is None:
        resource.id = new_id()
    resource.state = None  # type: ignore[assignment]  # inserted by the flush in transition
    session.add(resource)
    return await transition(session, resource, S.REQUESTED, "requested by spec")


async def release_dependents(session: AsyncSession, activated: Iterable[tuple[str, str]]) -> bool:
    """Un-park the resources waiting for these (application id, name) pairs, which just became ACTIVE.

    The sequencer runs it where commit order is settled: on PostgreSQL after the transaction that made
    them ACTIVE has committed (a claim that parked a dependent concurrently either saw the dependency
    ACTIVE and did not park, or holds the dependent's row lock until it commits and is released here);
    on SQLite inside that transaction, which runs alone. Whether it released any (only then has the
    engine something to claim).
    """
    released = False
    for app, name in activated:
        released = bool(await direct.rows(session, _RELEASE, {"b_app": app, "b_name": name})) or released
    return released


_resources = Resource.__table__
_RELEASE = (  # built once: building it costs more than running it
    update(_resources)
    .where(_resources.c.application_id == bindparam("b_app"), _resources.c.waiting_for == bindparam("b_name"))
    .values(waiting_for=None)
    .returning(_resources.c.id)
)
