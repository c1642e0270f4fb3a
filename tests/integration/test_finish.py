"""A run's finish. On PostgreSQL a create that succeeded is finished by one statement outside a
transaction (engine/recorder.py); it must write what the general path writes, in the system's lock order
(resource, then run), and publish its event as a transaction's."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from innominatus import specs
from innominatus.db import models
from innominatus.engine.claims import Claimer
from innominatus.engine.recorder import StepRecorder
from innominatus.events import StateEvent
from innominatus.providers import Catalog
from innominatus.store import Store
from innominatus.workflows.policy import StepResult
from tests.conftest import FIXTURES
from tests.integration.helpers import execution, resources, steps_of

MOCK_SPEC = (FIXTURES / "postgres-mock-app.yaml").read_text()
APP = "demo-app-mock"


async def _claimed(store: Store, catalog: Catalog) -> StepRecorder:
    """The mock's create run, claimed, its steps all succeeded (the last one's result not yet written)."""
    await specs.submit(store, catalog, MOCK_SPEC)
    claimer = Claimer(store.box, store.dialect, "replica-a", timedelta(seconds=30))
    async with store.transaction() as session:
        [claim] = await claimer.requested(session, catalog, 10)
    recorder = StepRecorder(store, claim, "replica-a")
    steps = claim.workflow.definition.steps
    for index, step in enumerate(steps):
        attempt = await recorder.attempt_started(index, step)
        outputs = {"host": "db.internal"} if index == len(steps) - 1 else {}
        result = StepResult(succeeded=True, logs=f"step {index} done\n", outputs=outputs, error=None)
        await recorder.attempt_finished(index, step, attempt, result, final=True)
    return recorder


def _listen(store: Store) -> list[StateEvent]:
    seen: list[StateEvent] = []
    store.hub.add_listener(seen.append)
    return seen


async def _check_finished(store: Store, recorder: StepRecorder, seen: list[StateEvent]) -> None:
    """What a user sees after a create's successful finish, on either path."""
    claim = recorder.claim
    assert recorder.outcome == "SUCCEEDED"
    [resource] = await resources(store, APP)
    assert (resource.state, resource.error_message, resource.outputs) == (
        "ACTIVE",
        None,
        {"host": "db.internal", "port": "5432"},
    )
    run = await execution(store, claim.execution_id)
    assert (run.status, run.error_message, run.lease_owner, run.lease_expires_at) == (
        "SUCCEEDED",
        None,
        None,
        None,
    )
    assert run.finished_at is not None
    steps = await steps_of(store, run.id)
    assert [(s.status, s.attempts) for s in steps] == [("SUCCEEDED", 1)] * len(steps)
    assert steps[-1].logs == f"step {len(steps) - 1} done\n"
    active = [e for e in seen if e.to_state == "ACTIVE"]
    assert [(e.from_state, e.reason) for e in active] == [
        ("PROVISIONING", f"workflow {claim.workflow.name} succeeded")
    ]
    (event,) = active
    assert event.resource is not None and (event.resource.id, event.resource.state) == (resource.id, "ACTIVE")
    assert event.sequence == max(e.sequence for e in seen)  # numbered after the claim's PROVISIONING
    async with store.session() as session:
        stored = (
            await session.scalars(select(models.Event).where(models.Event.resource_id == resource.id))
        ).all()
    assert [(e.from_state, e.to_state, e.sequence is not None) for e in stored] == [
        (None, "REQUESTED", True),
        ("REQUESTED", "PROVISIONING", True),
        ("PROVISIONING", "ACTIVE", True),
    ]
    assert stored[-1].at == resource.updated_at


async def test_a_successful_create_finishes_and_publishes(store: Store, catalog: Catalog) -> None:
    seen = _listen(store)
    recorder = await _claimed(store, catalog)
    await recorder.finish(outputs={"host": "db.internal", "port": "5432"}, error=None)
    await _check_finished(store, recorder, seen)


async def test_the_finish_locks_the_resource_before_the_run(store: Store, catalog: Catalog) -> None:
    """The API locks a resource, then its run: a finish that took the run's row first and then waited
    for the resource's could deadlock with it. While another transaction holds the resource, the finish
    waits holding nothing, and completes once the resource is free."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite's writers take the one write lock; there are no row locks")
    seen = _listen(store)
    recorder = await _claimed(store, catalog)
    [resource] = await resources(store, APP)
    run_id = recorder.claim.execution_id
    async with store.engine.connect() as holder:
        await holder.execute(
            select(models.Resource.id).where(models.Resource.id == resource.id).with_for_update()
        )
        finishing = asyncio.create_task(
            recorder.finish(outputs={"host": "db.internal", "port": "5432"}, error=None)
        )
        await asyncio.sleep(0.5)
        assert not finishing.done()
        async with store.engine.connect() as other:  # the run's row is free: NOWAIT would raise otherwise
            locked = text("SELECT id FROM workflow_executions WHERE id = :id FOR UPDATE NOWAIT")
            assert (await other.execute(locked, {"id": run_id})).scalar() == run_id
            await other.rollback()
        assert (await execution(store, run_id)).status == "RUNNING"
        await holder.rollback()
        await asyncio.wait_for(finishing, 10)
    await _check_finished(store, recorder, seen)


async def test_a_create_whose_resource_left_provisioning_is_not_finished_as_active(
    store: Store, catalog: Catalog
) -> None:
    """Moved on meanwhile (here: to DELETED behind the run's back), the resource is not made ACTIVE and
    nothing of the finish is written; the state machine's refusal surfaces as before."""
    recorder = await _claimed(store, catalog)
    [resource] = await resources(store, APP)
    async with store.engine.begin() as conn:
        await conn.execute(text("UPDATE resources SET state = 'DELETED' WHERE id = :id"), {"id": resource.id})
    with pytest.raises(RuntimeError, match="DELETED → ACTIVE is not allowed"):
        await recorder.finish(outputs={"host": "db.internal"}, error=None)
    run = await execution(store, recorder.claim.execution_id)
    assert (run.status, run.lease_owner) == ("RUNNING", "replica-a")
    steps = await steps_of(store, run.id)
    assert steps[-1].status == "RUNNING"  # the last result was to be written with the finish: not written
    async with store.session() as session:
        after = await session.get(models.Resource, resource.id)
    assert after is not None and (after.state, after.outputs) == ("DELETED", {})
