"""Update, delete, retry, timeouts and dependencies: store + engine + real bash, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from innominatus import operations, specs
from innominatus.db import models
from innominatus.providers import Catalog, load_catalog
from innominatus.references import LiveResource, workload
from innominatus.score import SpecError
from innominatus.store import Store
from tests.conftest import FIXTURES, ProviderFactory, workflow_yaml
from tests.integration.helpers import execution, executions_of, resources, running_engine, steps_of
from tests.processes import alive

MOCK = (FIXTURES / "postgres-mock-app.yaml").read_text()
APP = "demo-app-mock"


async def wait_states(
    store: Store, app: str, want: dict[str, str], timeout: float = 20
) -> dict[str, models.Resource]:
    """Poll until each named live resource is in the wanted state (DELETED ones count by name too)."""
    async with asyncio.timeout(timeout):
        while True:
            rows = await resources(store, app)
            latest: dict[str, models.Resource] = {}
            for r in sorted(rows, key=lambda r: r.created_at):
                latest[r.name] = r
            if all(n in latest and latest[n].state == s for n, s in want.items()):
                return latest
            await asyncio.sleep(0.05)


async def transitions(store: Store, resource_id: str) -> list[tuple[str | None, str]]:
    async with store.session() as session:
        rows = await session.scalars(
            select(models.Event).where(models.Event.resource_id == resource_id).order_by(models.Event.id)
        )
        return [(r.from_state, r.to_state) for r in rows]


async def count(store: Store, model: type) -> int:
    async with store.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def update(store: Store, catalog: Catalog, resource_id: str, props: dict) -> None:
    async with store.transaction() as session:
        resource = await session.get(models.Resource, resource_id)
        app = await session.get(models.Application, resource.application_id)
        await operations.lock_application(session, app.name)
        await session.refresh(resource)
        await operations.update_properties(session, catalog, app, resource, props)


async def delete_app(store: Store, catalog: Catalog, name: str) -> None:
    async with store.transaction() as session:
        app = await operations.lock_application(session, name)
        await operations.delete_application(session, catalog, app)


async def retry(store: Store, resource_id: str) -> None:
    async with store.transaction() as session:
        resource = await session.get(models.Resource, resource_id)
        await operations.retry(session, resource)


# ------------------------------------------------------------------------------------------ update


async def test_changed_properties_run_the_update_workflow(store: Store, catalog: Catalog) -> None:
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, MOCK)
        before = (await wait_states(store, APP, {"database": "ACTIVE"}))["database"]
        result = await specs.submit(store, catalog, MOCK.replace("size: small", "size: large"))
        assert result.changed and result.application.revision == 2
        after = (await wait_states(store, APP, {"database": "ACTIVE"}))["database"]
    assert after.id == before.id
    assert after.properties["size"] == "large"
    assert after.outputs["size"] == "large"  # replaced where the update renders it
    assert after.outputs["password"] == before.outputs["password"]  # kept otherwise
    assert (await transitions(store, after.id))[-2:] == [("ACTIVE", "UPDATING"), ("UPDATING", "ACTIVE")]
    runs = await executions_of(store, after.id)
    assert [(r.workflow_name, r.operation, r.status) for r in runs] == [
        ("provision-postgres-mock", "create", "SUCCEEDED"),
        ("update-postgres-mock", "update", "SUCCEEDED"),
    ]


async def test_unchanged_spec_fifty_times_runs_nothing(store: Store, catalog: Catalog) -> None:
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, MOCK)
        await wait_states(store, APP, {"database": "ACTIVE"})
        events_before = await count(store, models.Event)
        results = [await specs.submit(store, catalog, MOCK) for _ in range(50)]
        await asyncio.sleep(0.3)
    assert not any(r.changed for r in results)
    assert {r.application.revision for r in results} == {1}
    assert await count(store, models.ApplicationRevision) == 1
    assert await count(store, models.WorkflowExecution) == 1
    assert await count(store, models.Event) == events_before


async def test_update_resource_merges_and_next_submission_diffs_against_it(
    store: Store, catalog: Catalog
) -> None:
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, MOCK)
        db = (await wait_states(store, APP, {"database": "ACTIVE"}))["database"]
        await update(store, catalog, db.id, {"replicas": 5})
        db = (await wait_states(store, APP, {"database": "ACTIVE"}))["database"]
        assert db.properties == {"db_name": "demo_db", "size": "small", "replicas": 5}
        assert db.outputs["replicas"] == "5"
        # The spec still says replicas: 2, which now differs from the current properties: update back.
        await specs.submit(store, catalog, MOCK)
        await asyncio.sleep(0.1)
        db = (await wait_states(store, APP, {"database": "ACTIVE"}))["database"]
    assert db.properties["replicas"] == 2
    assert [r.operation for r in await executions_of(store, db.id)] == ["create", "update", "update"]


async def test_update_resource_that_is_not_active_is_refused(store: Store, catalog: Catalog) -> None:
    await specs.submit(store, catalog, MOCK)  # no engine: stays REQUESTED
    [db] = await resources(store, APP)
    with pytest.raises(
        operations.OperationError, match="is REQUESTED; only an ACTIVE resource can be updated"
    ):
        await update(store, catalog, db.id, {"size": "large"})
    [db] = await resources(store, APP)
    assert db.properties["size"] == "small"


async def test_two_racing_updates_second_is_refused(store: Store, catalog: Catalog) -> None:
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, MOCK)
        db = (await wait_states(store, APP, {"database": "ACTIVE"}))["database"]
        results = await asyncio.gather(
            update(store, catalog, db.id, {"size": "medium"}),
            update(store, catalog, db.id, {"size": "large"}),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, Exception)]
        assert len(errors) == 1 and isinstance(errors[0], operations.OperationError)
        assert "is UPDATING" in str(errors[0])
        db = (await wait_states(store, APP, {"database": "ACTIVE"}))["database"]
    assert [r.operation for r in await executions_of(store, db.id)] == ["create", "update"]


async def test_missing_update_workflow_refuses_the_whole_submission(
    store: Store, make_provider: ProviderFactory
) -> None:
    wf = workflow_yaml("provision-test", "- name: s\n  type: policy\n  config:\n    script: 'true'\n")
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    spec = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: app-x\ncontainers:\n  main:\n    image: a\n"
        "resources:\n  db:\n    type: test-db\n    properties:\n      size: small\n"
    )
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec)
        await wait_states(store, "app-x", {"db": "ACTIVE"})
        grown = spec.replace("size: small", "size: large") + "  cache:\n    type: test-db\n"
        with pytest.raises(SpecError) as err:
            await specs.submit(store, catalog, grown)
        [problem] = err.value.problems
        assert problem.path == "resources.db"
        for word in ("update", "test-db", "test-team", "db"):
            assert word in problem.message
        removed = spec.split("resources:")[0] + "resources: {}\n"
        with pytest.raises(SpecError) as err:
            await specs.submit(store, catalog, removed)
        assert "no delete workflow" in err.value.problems[0].message
    assert [(r.name, r.state, r.properties) for r in await resources(store, "app-x")] == [
        ("db", "ACTIVE", {"size": "small"})
    ]
    assert await count(store, models.ApplicationRevision) == 1


async def test_changed_type_is_refused(store: Store, catalog: Catalog) -> None:
    await specs.submit(store, catalog, MOCK)
    with pytest.raises(SpecError) as err:
        await specs.submit(store, catalog, MOCK.replace("type: postgres-mock", "type: postgres"))
    assert err.value.problems[0].path == "resources.database.type"
    assert "cannot change the type" in err.value.problems[0].message


async def test_requested_resource_gets_new_params(store: Store, catalog: Catalog) -> None:
    await specs.submit(store, catalog, MOCK)  # no engine running: stays REQUESTED
    await specs.submit(store, catalog, MOCK.replace("size: small", "size: medium"))
    [db] = await resources(store, APP)
    assert (db.state, db.properties["size"]) == ("REQUESTED", "medium")
    assert await transitions(store, db.id) == [(None, "REQUESTED")]


async def test_failed_resource_is_created_again_with_new_values(store: Store, catalog: Catalog) -> None:
    broken = MOCK.replace("      db_name: demo_db\n", "")  # db_name is required by the workflow
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, broken)
        db = (await wait_states(store, APP, {"database": "FAILED"}))["database"]
        assert "parameter 'db_name' is required" in db.error_message
        await specs.submit(store, catalog, MOCK)
        db = (await wait_states(store, APP, {"database": "ACTIVE"}))["database"]
    assert (await transitions(store, db.id))[-4:] == [
        ("PROVISIONING", "FAILED"),
        ("FAILED", "REQUESTED"),
        ("REQUESTED", "PROVISIONING"),
        ("PROVISIONING", "ACTIVE"),
    ]


async def test_change_while_provisioning_is_refused(store: Store, make_provider: ProviderFactory) -> None:
    wf = workflow_yaml("provision-test", "- name: slow\n  type: policy\n  config:\n    script: sleep 2\n")
    up = workflow_yaml("update-test", "- name: s\n  type: policy\n  config:\n    script: 'true'\n")
    catalog = load_catalog(
        make_provider(
            {"provision-test": wf, "update-test": up},
            types={"test-db": {"create": "provision-test", "update": "update-test"}},
        ),
        None,
    )
    spec = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: app-busy\ncontainers:\n  main:\n    image: a\n"
        "resources:\n  db:\n    type: test-db\n    properties:\n      size: small\n"
    )
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec)
        await wait_states(store, "app-busy", {"db": "PROVISIONING"})
        with pytest.raises(SpecError) as err:
            await specs.submit(store, catalog, spec.replace("small", "large"))
        assert err.value.problems[0].path == "resources.db"
        assert "is PROVISIONING" in err.value.problems[0].message
        db = (await wait_states(store, "app-busy", {"db": "ACTIVE"}))["db"]
    assert db.properties == {"size": "small"}


# ------------------------------------------------------------------------------------------ delete


async def test_removed_resource_runs_delete_workflow(store: Store, catalog: Catalog) -> None:
    grown = MOCK + "  cache:\n    type: postgres-mock\n    properties:\n      db_name: cache_db\n"
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, grown)
        await wait_states(store, APP, {"database": "ACTIVE", "cache": "ACTIVE"})
        await specs.submit(store, catalog, MOCK)
        rows = await wait_states(store, APP, {"database": "ACTIVE", "cache": "DELETED"})
    cache = rows["cache"]
    assert (await transitions(store, cache.id))[-2:] == [("ACTIVE", "DELETING"), ("DELETING", "DELETED")]
    runs = await executions_of(store, cache.id)
    assert (runs[-1].workflow_name, runs[-1].status) == ("delete-postgres-mock", "SUCCEEDED")
    [step] = await steps_of(store, runs[-1].id)
    assert "Deleting mock PostgreSQL database cache_db" in step.logs


async def test_spec_removing_every_resource(store: Store, catalog: Catalog) -> None:
    plain = MOCK.split("    env:")[0] + "resources:" + MOCK.split("resources:")[1]  # no placeholders
    empty = plain.split("resources:")[0]
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, plain)
        await wait_states(store, APP, {"database": "ACTIVE"})
        result = await specs.submit(store, catalog, empty)
        assert result.changed
        await wait_states(store, APP, {"database": "DELETED"})
        # The name can be used again; the old row stays as history.
        await specs.submit(store, catalog, plain)
        await wait_states(store, APP, {"database": "ACTIVE"})
    rows = await resources(store, APP)
    assert sorted(r.state for r in rows) == ["ACTIVE", "DELETED"]


async def test_delete_application_in_reverse_dependency_order(store: Store, catalog: Catalog) -> None:
    spec = MOCK + (
        "  replica:\n    type: postgres-mock\n    properties:\n"
        "      db_name: replica_of_${resources.database.database_name}\n"
    )
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec)
        await wait_states(store, APP, {"database": "ACTIVE", "replica": "ACTIVE"})
        await delete_app(store, catalog, APP)
        rows = await wait_states(store, APP, {"database": "DELETED", "replica": "DELETED"})
    replica_delete = (await executions_of(store, rows["replica"].id))[-1]
    [database_step] = await steps_of(store, (await executions_of(store, rows["database"].id))[-1].id)
    assert replica_delete.workflow_name == "delete-postgres-mock"
    assert database_step.started_at >= replica_delete.finished_at  # the dependent went first
    async with store.session() as session:
        app = await session.scalar(select(models.Application).where(models.Application.name == APP))
    assert app.deleted_at is not None  # gone from `applications`, history kept
    assert len(await executions_of(store, rows["database"].id)) == 2


async def test_delete_without_delete_workflow_marks_deleted(
    store: Store, make_provider: ProviderFactory
) -> None:
    wf = workflow_yaml("provision-test", "- name: s\n  type: policy\n  config:\n    script: 'true'\n")
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    spec = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: app-nodel\ncontainers:\n  main:\n    image: a\n"
        "resources:\n  db:\n    type: test-db\n"
    )
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec)
        await wait_states(store, "app-nodel", {"db": "ACTIVE"})
        await delete_app(store, catalog, "app-nodel")
    [db] = await resources(store, "app-nodel")
    async with store.session() as session:
        last = (
            await session.scalars(
                select(models.Event).where(models.Event.resource_id == db.id).order_by(models.Event.id.desc())
            )
        ).first()
    assert (db.state, last.reason) == ("DELETED", "no delete workflow")


async def test_delete_while_provisioning_cancels_cleanly(
    store: Store, make_provider: ProviderFactory, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    wf = workflow_yaml(
        "provision-test",
        f"- name: long\n  type: policy\n  config:\n    script: |\n      sleep 300 &\n      echo $! > {pidfile}\n"
        "      wait\n",
    )
    rm = workflow_yaml("delete-test", "- name: rm\n  type: policy\n  config:\n    script: echo removed\n")
    catalog = load_catalog(
        make_provider(
            {"provision-test": wf, "delete-test": rm},
            types={"test-db": {"create": "provision-test", "delete": "delete-test"}},
        ),
        None,
    )
    spec = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: app-cancel\ncontainers:\n  main:\n    image: a\n"
        "resources:\n  db:\n    type: test-db\n"
    )
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec)
        async with asyncio.timeout(10):
            while not pidfile.exists() or not pidfile.read_text().strip():
                await asyncio.sleep(0.05)
        child = int(pidfile.read_text())
        await delete_app(store, catalog, "app-cancel")
        db = (await wait_states(store, "app-cancel", {"db": "DELETED"}))["db"]
    first, second = await executions_of(store, db.id)
    assert (first.status, second.workflow_name, second.status) == ("CANCELLED", "delete-test", "SUCCEEDED")
    [step] = await steps_of(store, first.id)
    assert step.status == "FAILED" and "cancelled" in step.error_message
    assert not alive(child)  # the step's whole process group is gone
    assert (await transitions(store, db.id))[-3:] == [
        ("REQUESTED", "PROVISIONING"),
        ("PROVISIONING", "DELETING"),
        ("DELETING", "DELETED"),
    ]


# ---------------------------------------------------------------------------------- retry, timeout


async def test_retry_runs_from_the_failed_step(
    store: Store, make_provider: ProviderFactory, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    first_runs = tmp_path / "first-runs"
    wf = workflow_yaml(
        "provision-test",
        f"- name: first\n  type: policy\n  config:\n    script: |\n      echo run >> {first_runs}\n"
        '      echo \'{"token": "t1"}\'\n'
        f"- name: second\n  type: policy\n  config:\n    script: |\n      test -f {gate} || {{ echo gate closed >&2; exit 3; }}\n"
        "      echo 'second ok'\n",
        outputs='token: "{{ steps.first.outputs.token }}"\n',
    )
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    spec = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: app-retry\ncontainers:\n  main:\n    image: a\n"
        "resources:\n  db:\n    type: test-db\n"
    )
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec)
        db = (await wait_states(store, "app-retry", {"db": "FAILED"}))["db"]
        assert db.error_message == "step 'second' failed: exit code 3: gate closed"
        gate.write_text("open")
        await retry(store, db.id)
        db = (await wait_states(store, "app-retry", {"db": "ACTIVE"}))["db"]
        with pytest.raises(
            operations.OperationError, match="is ACTIVE; only a FAILED resource can be retried"
        ):
            await retry(store, db.id)
    old, new = await executions_of(store, db.id)
    assert new.retry_of == old.id
    assert (old.status, new.status) == ("FAILED", "SUCCEEDED")
    first_step, second_step = await steps_of(store, new.id)
    assert (first_step.status, first_step.attempts) == ("SUCCEEDED", 1)
    assert (second_step.status, second_step.attempts) == ("SUCCEEDED", 1)
    assert first_runs.read_text().count("run") == 1  # not run again
    assert db.outputs == {"token": "t1"}  # earlier step kept its outputs


async def test_step_retries_are_visible_per_attempt(
    store: Store, make_provider: ProviderFactory, tmp_path: Path
) -> None:
    counter = tmp_path / "n"
    wf = workflow_yaml(
        "provision-test",
        "- name: flaky\n  type: policy\n  retries: 2\n  retryDelay: 0.1\n  config:\n    script: |\n"
        f"      n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}\n"
        '      echo "try $n"\n      [ $n -ge 3 ] || exit 1\n',
    )
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    spec = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: app-flaky\ncontainers:\n  main:\n    image: a\n"
        "resources:\n  db:\n    type: test-db\n"
    )
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec)
        db = (await wait_states(store, "app-flaky", {"db": "ACTIVE"}))["db"]
    [step] = await steps_of(store, db.workflow_execution_id)
    assert (step.status, step.attempts) == ("SUCCEEDED", 3)
    for n in (1, 2, 3):
        assert f"--- attempt {n} ---\ntry {n}\n" in step.logs
    assert "--- attempt 1 failed: exit code 1 ---" in step.logs
    assert "--- attempt 3 succeeded ---" in step.logs


async def test_workflow_timeout(store: Store, make_provider: ProviderFactory) -> None:
    wf = workflow_yaml("provision-test", "- name: a\n  type: policy\n  config:\n    script: sleep 30\n")
    wf = wf.replace("steps:", "timeout: 1\nsteps:", 1)
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    spec = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: app-slow\ncontainers:\n  main:\n    image: a\n"
        "resources:\n  db:\n    type: test-db\n"
    )
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec)
        db = (await wait_states(store, "app-slow", {"db": "FAILED"}))["db"]
    assert db.error_message == "workflow 'provision-test' timed out after 1s"
    [step] = await steps_of(store, db.workflow_execution_id)
    assert (step.status, step.error_message) == ("FAILED", db.error_message)
    assert (await execution(store, db.workflow_execution_id)).status == "FAILED"


# ------------------------------------------------------------------------------------ dependencies


async def test_dependent_waits_and_gets_resolved_values(store: Store, catalog: Catalog) -> None:
    spec = MOCK + (
        "  reader:\n    type: postgres-mock\n    properties:\n"
        "      db_name: ${resources.database.database_name}_reader\n"
    )
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec)
        rows = await wait_states(store, APP, {"database": "ACTIVE", "reader": "ACTIVE"})
    reader, database = rows["reader"], rows["database"]
    assert reader.properties["db_name"] == "${resources.database.database_name}_reader"  # stored as written
    assert reader.outputs["database_name"] == "demo_db_reader"
    assert reader.depends_on == ["database"]
    run = await execution(store, reader.workflow_execution_id)
    assert run.started_at >= (await execution(store, database.workflow_execution_id)).finished_at
    assert (await transitions(store, reader.id))[:2] == [(None, "REQUESTED"), ("REQUESTED", "PROVISIONING")]


async def test_missing_output_fails_the_dependent_naming_the_key(store: Store, catalog: Catalog) -> None:
    spec = (
        MOCK
        + "  reader:\n    type: postgres-mock\n    properties:\n      db_name: ${resources.database.nope}\n"
    )
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec)
        rows = await wait_states(store, APP, {"database": "ACTIVE", "reader": "FAILED"})
    assert (
        rows["reader"].error_message == "${resources.database.nope}: resource 'database' has no output 'nope'"
    )


async def test_cycles_are_refused_at_submit(store: Store, catalog: Catalog) -> None:
    spec = MOCK.replace("db_name: demo_db", "db_name: ${resources.other.database_name}") + (
        "  other:\n    type: postgres-mock\n    properties:\n      db_name: ${resources.database.database_name}\n"
    )
    with pytest.raises(SpecError) as err:
        await specs.submit(store, catalog, spec)
    assert "dependency cycle: database → other → database" in str(err.value.problems)
    assert await count(store, models.Resource) == 0


async def test_workload_resolves_once_all_resources_are_active(store: Store, catalog: Catalog) -> None:
    spec = MOCK.replace("DB_NAME: ${resources.database.database_name}", "DB_NAME: ${resources.database.nope}")
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec)
        async with store.session() as session:
            app = await session.scalar(select(models.Application).where(models.Application.name == APP))
        rows = await resources(store, APP)
        early = workload(app.spec, {r.name: LiveResource(r.id, r.state, r.outputs) for r in rows})
        assert (early.containers, early.pending) == (None, ["database"])
        db = (await wait_states(store, APP, {"database": "ACTIVE"}))["database"]
    done = workload(app.spec, {"database": LiveResource(db.id, db.state, db.outputs)})
    variables = done.containers["backend"]["variables"]
    assert variables["DATABASE_URL"] == db.outputs["connection_string"]
    assert variables["DB_PASSWORD"] == db.outputs["password"]
    assert variables["DB_NAME"] == "${resources.database.nope}"
    assert done.errors == ["${resources.database.nope}: resource 'database' has no output 'nope'"]
    assert done.pending == []


async def test_a_run_another_transaction_kept_from_a_claim_pass_is_claimed_once_it_is_free(
    store: Store, catalog: Catalog
) -> None:
    """PostgreSQL's claim pass skips locked rows (SKIP LOCKED): a run waiting behind a resource that a
    refused update held for a moment must still start, with no event and long before the sweep."""
    if store.dialect != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's; SQLite's claims take the write lock")
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, MOCK)
        db = (await wait_states(store, APP, {"database": "ACTIVE"}))["database"]
    await update(store, catalog, db.id, {"size": "large"})  # no engine runs: the run waits, UPDATING
    after = await _active_once_the_held_row_is_free(store, catalog, db.id, "UPDATING")
    assert after.outputs["size"] == "large"


async def test_a_requested_resource_another_transaction_kept_from_a_claim_pass_is_claimed_once_free(
    store: Store, catalog: Catalog
) -> None:
    """The same for a REQUESTED resource: a claim pass that skipped its locked row (a refused update or
    retry holds it for a moment) must look again soon, not leave it to the sweep."""
    if store.dialect != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's; SQLite's claims take the write lock")
    await specs.submit(store, catalog, MOCK)  # no engine: nothing claims it
    (db,) = await resources(store, APP)
    assert db.state == "REQUESTED"
    after = await _active_once_the_held_row_is_free(store, catalog, db.id, "REQUESTED")
    assert after.outputs["username"]


async def _active_once_the_held_row_is_free(
    store: Store, catalog: Catalog, resource_id: str, waiting: str
) -> models.Resource:
    """Another transaction holds the resource's row while an engine starts (its sweep far away): the
    resource still waits (`waiting`) after the engine's first pass, and is ACTIVE within 10 s of the
    row's release."""
    async with store.engine.connect() as holder:
        locked = select(models.Resource.id).where(models.Resource.id == resource_id).with_for_update()
        await holder.execute(locked)
        async with running_engine(store, catalog, sweep_interval=600):
            await asyncio.sleep(0.5)  # the engine's first pass has come and gone, past the held row
            assert (await wait_states(store, APP, {"database": waiting}, timeout=1))["database"]
            await holder.rollback()
            return (await wait_states(store, APP, {"database": "ACTIVE"}, timeout=10))["database"]
