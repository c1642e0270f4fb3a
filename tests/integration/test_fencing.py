"""Fencing: an engine whose lease on a run was taken over cannot write to that run any more (SQLite and
PostgreSQL). Two claimers stand for two replicas; the lease runs out by the database's clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from innominatus import specs
from innominatus.db import clock, models
from innominatus.engine.claims import Claimer
from innominatus.engine.recorder import LeaseLost, StepRecorder
from innominatus.providers import Catalog
from innominatus.store import Store
from innominatus.workflows.policy import StepResult
from tests.conftest import FIXTURES
from tests.integration.helpers import execution, resources, steps_of

MOCK_SPEC = (FIXTURES / "postgres-mock-app.yaml").read_text()
LEASE = timedelta(seconds=30)


async def _claimed_then_taken_over(store: Store, catalog: Catalog) -> tuple[StepRecorder, StepRecorder]:
    await specs.submit(store, catalog, MOCK_SPEC)
    old = Claimer(store.box, store.dialect, "replica-old", LEASE)
    new = Claimer(store.box, store.dialect, "replica-new", LEASE)
    async with store.transaction() as session:
        [first] = await old.requested(session, catalog, 10)
    async with store.transaction() as session:
        assert await new.runs(session, catalog, 10, set()) == []  # the lease holds
        await session.execute(
            update(models.WorkflowExecution)
            .where(models.WorkflowExecution.id == first.execution_id)
            .values(lease_expires_at=clock.later(store.dialect, -timedelta(seconds=1)))
        )
    async with store.transaction() as session:
        [second] = await new.runs(session, catalog, 10, set())
    assert (first.execution_id, first.token, second.token) == (second.execution_id, 1, 2)
    return StepRecorder(store, first, "replica-old"), StepRecorder(store, second, "replica-new")


async def test_writes_of_an_engine_that_lost_its_lease_are_refused(store: Store, catalog: Catalog) -> None:
    stale, owner = await _claimed_then_taken_over(store, catalog)
    step = owner.claim.workflow.definition.steps[0]
    assert await owner.attempt_started(0, step) == 2
    late = StepResult(succeeded=False, logs="late line from the old owner\n", outputs={}, error="boom")
    with pytest.raises(LeaseLost):
        await stale.attempt_finished(0, step, 1, late, final=False)  # a retry's result: written at once
    with pytest.raises(LeaseLost):
        await stale.attempt_started(1, owner.claim.workflow.definition.steps[1])
    done = StepResult(succeeded=True, logs="old owner's final result\n", outputs={"x": "1"}, error=None)
    await stale.attempt_finished(0, step, 1, done, final=True)
    await stale.finish(outputs={"host": "stale"}, error=None)
    assert stale.outcome is None  # not its run to finish

    run = await execution(store, owner.claim.execution_id)
    assert (run.status, run.lease_owner, run.runner, run.lease_token) == (
        "RUNNING",
        "replica-new",
        "replica-new",
        2,
    )
    steps = await steps_of(store, run.id)
    assert (steps[0].status, steps[0].attempts) == ("RUNNING", 2)
    assert "old owner" not in steps[0].logs and steps[1].status == "PENDING"
    [resource] = await resources(store, "demo-app-mock")
    assert resource.state == "PROVISIONING" and resource.outputs == {}

    ok = StepResult(succeeded=True, logs="new owner's line\n", outputs={}, error=None)
    await owner.attempt_finished(0, step, 2, ok, final=True)
    await owner.finish(outputs={"host": "h"}, error="stopped here on purpose")
    assert owner.outcome == "FAILED"  # the owner's own end is accepted
    steps = await steps_of(store, run.id)
    assert "new owner's line" in steps[0].logs and steps[0].status == "SUCCEEDED"
