"""THE resource state machine: which transitions exist, and what each one writes.

Every change of a resource's state goes through `transition` (or `create` for the first one), which
writes the audit row and the durable event row in the caller's transaction. The events reach
in-process subscribers once that transaction commits (see store.Store.transaction).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from innominatus.db.models import Event, Resource, ResourceTransition, new_id, utcnow
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

PENDING_EVENTS = "innominatus.pending_events"
_SEQUENCE_LOCK = "innominatus.sequence_lock"
# PostgreSQL hands out sequence numbers at insert, not at commit: without this lock a transaction could
# commit event 5 after another committed event 6, and a client resuming "after 6" would never see 5.
# Holding one advisory lock from the first event insert to commit makes commit order = sequence order.
_SEQUENCE_LOCK_KEY = 0x1EE7_0001


class IllegalTransition(RuntimeError):
    """A bug: some code asked for a state change the machine does not have."""


async def lock_sequence(session: AsyncSession) -> None:
    """Take the event-order lock (PostgreSQL; SQLite's write lock already orders commits).

    Transactions that will change states take it first thing (Store.transaction(sequenced=True)), so
    no transaction ever waits for it while holding a row lock another one needs: no deadlocks.
    """
    if session.bind.dialect.name != "postgresql" or session.info.get(_SEQUENCE_LOCK):
        return
    with session.no_autoflush:  # a new resource is flushed later, once its state is set
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SEQUENCE_LOCK_KEY})
    session.info[_SEQUENCE_LOCK] = True


def can_transition(from_state: S | None, to_state: S) -> bool:
    return to_state in ALLOWED[from_state]


async def transition(
    session: AsyncSession,
    resource: Resource,
    to_state: S,
    reason: str | None = None,
) -> Event:
    from_state = S(resource.state) if resource.state is not None else None
    if not can_transition(from_state, to_state):
        raise IllegalTransition(f"resource {resource.id}: {from_state} → {to_state} is not allowed")
    await lock_sequence(session)
    now = utcnow()
    resource.state = to_state.value
    resource.updated_at = now
    if to_state is not S.FAILED:
        resource.error_message = None
    else:
        resource.error_message = reason
    session.add(
        ResourceTransition(
            resource_id=resource.id, from_state=from_state, to_state=to_state, reason=reason, at=now
        )
    )
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
    await session.flush()  # assigns the sequence
    session.info.setdefault(PENDING_EVENTS, []).append(event)
    return event


async def create(session: AsyncSession, resource: Resource) -> Event:
    """Record a new resource: its first event goes from nothing to REQUESTED."""
    if resource.id is None:
        resource.id = new_id()
    resource.state = None  # type: ignore[assignment]  # inserted by the flush in transition
    session.add(resource)
    return await transition(session, resource, S.REQUESTED, "requested by spec")
