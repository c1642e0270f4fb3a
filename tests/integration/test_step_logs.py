"""Stored step logs are bounded: 1 MiB per attempt (head and tail), 2 MiB per step over its attempts,
and a retry's new run does not copy the old run's logs."""

from __future__ import annotations

from innominatus import operations, specs
from innominatus.db import models
from innominatus.engine.recorder import STEP_LOG_LIMIT
from innominatus.providers import load_catalog
from innominatus.store import Store
from tests.conftest import ProviderFactory, workflow_yaml
from tests.integration.helpers import executions_of, resources, running_engine, steps_of
from tests.integration.test_engine import spec_for
from tests.integration.test_operations import wait_states

# ~900 kB per attempt: each fits the attempt limit, four do not fit the step's.
NOISY = """\
- name: setup
  type: policy
  config:
    script: echo set up
- name: noisy
  type: policy
  retries: 3
  retryDelay: 0.01
  config:
    script: |
      echo "attempt starts"
      yes 0123456789012345678901234567890123456789 | head -n 22000
      echo "attempt ends"
      exit 1
"""


async def test_a_steps_logs_stay_within_two_mebibytes_and_a_retry_copies_none(
    store: Store, make_provider: ProviderFactory
) -> None:
    catalog = load_catalog(make_provider({"provision-test": workflow_yaml("provision-test", NOISY)}), None)
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec_for("noisy-app"))
        db = (await wait_states(store, "noisy-app", {"database": "FAILED"}))["database"]
        [setup, noisy] = await steps_of(store, db.workflow_execution_id)
        assert noisy.attempts == 4
        assert len(noisy.logs) <= STEP_LOG_LIMIT
        assert noisy.logs.startswith("--- attempt 1 ---\nattempt starts\n")  # the head stays
        assert "[... earlier attempts' logs cut here: a step keeps 2 MiB ...]\n" in noisy.logs
        assert noisy.logs.endswith("--- attempt 4 failed: exit code 1 ---\n")  # the newest whole
        assert noisy.logs.count("attempt ends") >= 2
        first_run = db.workflow_execution_id

        async with store.transaction() as session:
            row = await session.get(models.Resource, db.id)
            assert row is not None
            await operations.retry(session, row)
        await wait_states(store, "noisy-app", {"database": "FAILED"})
    [db] = await resources(store, "noisy-app")
    assert db.workflow_execution_id != first_run
    [kept, again] = await steps_of(store, db.workflow_execution_id)
    assert (
        kept.status == "SUCCEEDED" and kept.logs == f"[logs of this step are in workflow run {first_run}]\n"
    )
    assert setup.logs == "set up\n"  # the first run still has them
    assert len(again.logs) <= STEP_LOG_LIMIT and again.logs.startswith("--- attempt 1 ---\n")
    assert len(await executions_of(store, db.id)) == 2
