"""Store + engine + real bash, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from innominatus import specs
from innominatus.db import models
from innominatus.providers import Catalog, load_catalog
from innominatus.score import SpecError
from innominatus.store import Store
from tests.conftest import FIXTURES, ProviderFactory, workflow_yaml
from tests.integration.helpers import execution, resources, running_engine, settle, steps_of

MOCK_SPEC = (FIXTURES / "postgres-mock-app.yaml").read_text()


def spec_for(app: str, rtype: str = "test-db", props: str = "db_name: demo_db", extra: str = "") -> str:
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\ncontainers:\n  main:\n    image: nginx\n"
        f"resources:\n  database:\n    type: {rtype}\n    properties:\n"
        + "".join(f"      {line}\n" for line in props.splitlines())
        + extra
    )


async def test_mock_spec_becomes_active_with_outputs(store: Store, catalog: Catalog) -> None:
    async with running_engine(store, catalog):
        result = await specs.submit(store, catalog, MOCK_SPEC)
        assert result.application.revision == 1
        events = await settle(store, "demo-app-mock")
    assert [(e.from_state, e.to_state) for e in events] == [
        (None, "REQUESTED"),
        ("REQUESTED", "PROVISIONING"),
        ("PROVISIONING", "ACTIVE"),
    ]
    assert [e.sequence for e in events] == sorted(e.sequence for e in events)
    [db] = await resources(store, "demo-app-mock")
    assert db.state == "ACTIVE"
    out = db.outputs
    assert set(out) >= {"connection_string", "username", "password", "host", "port", "database_name"}
    assert all(isinstance(v, str) for v in out.values())
    assert out["username"] == "demo_db_app"
    assert out["database_name"] == "demo_db"
    assert len(out["password"]) >= 16
    assert out["connection_string"] == (
        f"postgresql://{out['username']}:{out['password']}@{out['host']}:{out['port']}/{out['database_name']}"
    )
    run = await execution(store, db.workflow_execution_id)
    assert (run.workflow_name, run.status, run.provider) == (
        "provision-postgres-mock",
        "SUCCEEDED",
        "database-team",
    )
    steps = await steps_of(store, run.id)
    assert [(s.name, s.type, s.status) for s in steps] == [
        ("create-mock-database", "policy", "SUCCEEDED"),
        ("wait-for-ready", "policy", "SUCCEEDED"),
        ("generate-credentials", "policy", "SUCCEEDED"),
    ]
    assert "Creating mock PostgreSQL database demo_db" in steps[0].logs
    assert out["password"] not in "".join(s.logs for s in steps)
    [stored] = await resources(store, "demo-app-mock", opened=False)
    for key in ("password", "connection_string"):  # sealed at rest
        assert stored.outputs[key].startswith("sealed:v1:") and out["password"] not in stored.outputs[key]
    assert stored.outputs["username"] == "demo_db_app"  # not a secret: stored as it is


async def test_passwords_differ_per_resource(store: Store, catalog: Catalog) -> None:
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, MOCK_SPEC)
        await specs.submit(store, catalog, MOCK_SPEC.replace("demo-app-mock", "other-app"))
        await settle(store, "demo-app-mock")
        await settle(store, "other-app")
    [a] = await resources(store, "demo-app-mock")
    [b] = await resources(store, "other-app")
    assert a.outputs["password"] != b.outputs["password"]


async def test_missing_required_parameter_fails_before_any_step(
    store: Store, make_provider: ProviderFactory
) -> None:
    wf = workflow_yaml(
        "provision-test",
        "- name: touch\n  type: policy\n  config:\n    script: echo ran\n",
        parameters="- name: db_name\n  type: string\n  required: true\n",
    )
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec_for("app-missing", props="size: small"))
        await settle(store, "app-missing")
    [res] = await resources(store, "app-missing")
    assert res.state == "FAILED"
    assert "parameter 'db_name' is required" in res.error_message
    [step] = await steps_of(store, res.workflow_execution_id)
    assert (step.status, step.attempts, step.logs) == ("SKIPPED", 0, "")
    assert (await execution(store, res.workflow_execution_id)).status == "FAILED"


async def test_parameter_type_is_checked(store: Store, make_provider: ProviderFactory) -> None:
    wf = workflow_yaml(
        "provision-test",
        "- name: s\n  type: policy\n  config:\n    script: 'true'\n",
        parameters="- name: replicas\n  type: integer\n",
    )
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec_for("app-types", props="replicas: two"))
        await settle(store, "app-types")
    [res] = await resources(store, "app-types")
    assert res.state == "FAILED"
    assert "parameter 'replicas' must be of type integer" in res.error_message


async def test_defaults_and_undeclared_inputs_reach_templates(
    store: Store, make_provider: ProviderFactory
) -> None:
    wf = workflow_yaml(
        "provision-test",
        "- name: show\n  type: policy\n  config:\n    script: |\n"
        '      echo "{\\"line\\": \\"{{ parameters.size }}-{{ parameters.extra }}-{{ parameters.app_name }}'
        '-{{ parameters.resource_name }}-{{ parameters.resource_type }}\\"}"\n',
        parameters="- name: size\n  type: string\n  default: small\n",
        outputs='line: "{{ steps.show.outputs.line }}"\n',
    )
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec_for("app-defaults", props="extra: x1"))
        await settle(store, "app-defaults")
    [res] = await resources(store, "app-defaults")
    assert res.state == "ACTIVE", res.error_message
    assert res.outputs == {"line": "small-x1-app-defaults-database-test-db"}


async def test_failing_script_reports_step_and_stderr(store: Store, make_provider: ProviderFactory) -> None:
    wf = workflow_yaml(
        "provision-test",
        "- name: first\n  type: policy\n  config:\n    script: echo fine\n"
        "- name: boom\n  type: policy\n  config:\n    script: |\n      echo 'disk quota exceeded' >&2\n      exit 7\n"
        "- name: never\n  type: policy\n  config:\n    script: echo never\n",
    )
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec_for("app-fail"))
        await settle(store, "app-fail")
    [res] = await resources(store, "app-fail")
    assert res.state == "FAILED"
    assert "step 'boom' failed" in res.error_message
    assert "exit code 7" in res.error_message
    assert "disk quota exceeded" in res.error_message
    steps = await steps_of(store, res.workflow_execution_id)
    assert [s.status for s in steps] == ["SUCCEEDED", "FAILED", "SKIPPED"]
    assert "disk quota exceeded" in steps[1].logs
    assert res.outputs == {}


async def test_hanging_script_fails_after_its_timeout(store: Store, make_provider: ProviderFactory) -> None:
    wf = workflow_yaml(
        "provision-test", "- name: hang\n  type: policy\n  timeout: 1\n  config:\n    script: sleep 60\n"
    )
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec_for("app-hang"))
        await settle(store, "app-hang", timeout=15)
    [res] = await resources(store, "app-hang")
    assert res.state == "FAILED"
    assert "step 'hang' failed" in res.error_message
    assert "timed out after 1" in res.error_message


async def test_spec_value_never_runs_as_shell(
    store: Store, make_provider: ProviderFactory, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    wf = workflow_yaml(
        "provision-test",
        "- name: create\n  type: policy\n  config:\n    script: echo creating {{ parameters.db_name }}\n",
    )
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec_for("app-inject", props=f'db_name: "$(touch {marker})"'))
        await settle(store, "app-inject")
    [res] = await resources(store, "app-inject")
    assert res.state == "FAILED"
    assert "db_name" in res.error_message
    assert not marker.exists()


async def test_shell_quote_passes_value_as_data(
    store: Store, make_provider: ProviderFactory, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    wf = workflow_yaml(
        "provision-test",
        "- name: create\n  type: policy\n  config:\n    script: |\n"
        "      printf '%s' {{ parameters.db_name | shell_quote }} > value.txt\n"
        '      echo "name=$(cat value.txt)" >> "$INNOMINATUS_OUTPUT"\n',
        outputs='name: "{{ steps.create.outputs.name }}"\n',
    )
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    value = f"$(touch {marker}); `id` 'q'"
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec_for("app-quoted", props=f'db_name: "{value}"'))
        await settle(store, "app-quoted")
    [res] = await resources(store, "app-quoted")
    assert res.state == "ACTIVE", res.error_message
    assert res.outputs["name"] == value
    assert not marker.exists()


async def test_unknown_type_is_refused_and_nothing_stored(store: Store, catalog: Catalog) -> None:
    bad = MOCK_SPEC.replace("type: postgres-mock", "type: mongo")
    with pytest.raises(SpecError) as err:
        await specs.submit(store, catalog, bad)
    [problem] = err.value.problems
    assert problem.path == "resources.database.type"
    assert "mongo" in problem.message and "postgres-mock" in problem.message
    async with store.session() as session:
        assert await session.scalar(select(func.count()).select_from(models.Application)) == 0
        assert await session.scalar(select(func.count()).select_from(models.Event)) == 0


async def test_resubmission_adds_new_resources_and_revisions(store: Store, catalog: Catalog) -> None:
    async with running_engine(store, catalog):
        first = await specs.submit(store, catalog, MOCK_SPEC)
        await settle(store, "demo-app-mock")
        same = await specs.submit(store, catalog, MOCK_SPEC)
        assert (same.changed, same.application.revision) == (False, 1)
        grown = MOCK_SPEC + "  cache:\n    type: postgres-mock\n    properties:\n      db_name: cache_db\n"
        second = await specs.submit(store, catalog, grown)
        assert (second.changed, second.application.revision) == (True, 2)
        await settle(store, "demo-app-mock", count=2)
    rows = await resources(store, "demo-app-mock")
    assert sorted((r.name, r.state) for r in rows) == [("cache", "ACTIVE"), ("database", "ACTIVE")]
    assert first.resources[0].id in {r.id for r in rows}
    async with store.session() as session:
        revisions = (await session.scalars(select(models.ApplicationRevision.revision))).all()
    assert sorted(revisions) == [1, 2]


async def test_concurrent_submissions_make_one_resource(store: Store, catalog: Catalog) -> None:
    results = await asyncio.gather(*(specs.submit(store, catalog, MOCK_SPEC) for _ in range(20)))
    assert sum(r.changed for r in results) == 1
    async with store.session() as session:
        assert await session.scalar(select(func.count()).select_from(models.Resource)) == 1
        assert await session.scalar(select(func.count()).select_from(models.Application)) == 1
        assert await session.scalar(select(func.count()).select_from(models.ApplicationRevision)) == 1
        assert await session.scalar(select(func.count()).select_from(models.Event)) == 1


async def test_many_resources_run_concurrently(store: Store, make_provider: ProviderFactory) -> None:
    wf = workflow_yaml("provision-test", "- name: wait\n  type: policy\n  config:\n    script: sleep 1\n")
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    extra = "".join(f"  r{i}:\n    type: test-db\n" for i in range(7))
    async with running_engine(store, catalog, concurrency=8):
        await specs.submit(store, catalog, spec_for("app-many", extra=extra))
        await settle(store, "app-many", count=8)
    rows = await resources(store, "app-many")
    assert all(r.state == "ACTIVE" for r in rows)
    steps = [s for r in rows for s in await steps_of(store, r.workflow_execution_id)]
    # All eight one-second steps overlap: each started before any of them finished.
    assert max(s.started_at for s in steps) < min(s.finished_at for s in steps)


async def test_engine_picks_up_work_stored_before_it_started(store: Store, catalog: Catalog) -> None:
    await specs.submit(store, catalog, MOCK_SPEC)
    async with running_engine(store, catalog):
        events = await settle(store, "demo-app-mock")
    assert events[-1].to_state == "ACTIVE"


def two_resource_spec(app: str) -> str:
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\ncontainers:\n  main:\n    image: nginx\n"
        "resources:\n  hub:\n    type: test-db\n"
        "  user:\n    type: test-db\n    properties:\n      host: ${resources.hub.host}\n"
    )


async def test_a_submission_claims_its_ready_resources_in_its_own_transaction(
    store: Store, make_provider: ProviderFactory
) -> None:
    wf = workflow_yaml(
        "provision-test",
        "- name: noop\n  type: policy\n  config:\n    script: 'echo host=h >> \"$INNOMINATUS_OUTPUT\"'\n",
        outputs="  host: '{{ steps.noop.outputs.host }}'\n",
    )
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    # No claim pass would run for an hour: only the submission itself can start `hub`.
    async with running_engine(store, catalog, sweep_interval=3600) as engine:
        engine._requested_backlog = False
        result = await specs.submit(store, catalog, two_resource_spec("inline"), engine=engine)
        states = {r.name: r.state for r in result.resources}
        assert states == {"hub": "PROVISIONING", "user": "REQUESTED"}  # `user` waits for `hub`
        events = await settle(store, "inline", count=2)
    hub = [(e.from_state, e.to_state, e.sequence) for e in events if e.resource.name == "hub"]
    assert [(f, t) for f, t, _ in hub] == [
        (None, "REQUESTED"),
        ("REQUESTED", "PROVISIONING"),
        ("PROVISIONING", "ACTIVE"),
    ]
    # Numbered with the submission's own two REQUESTED events: one transaction wrote all three.
    submission = sorted(e.sequence for e in events)[:3]
    assert submission == list(range(submission[0], submission[0] + 3))
    assert hub[1][2] in submission
    assert {r.name: r.state for r in await resources(store, "inline")} == {"hub": "ACTIVE", "user": "ACTIVE"}


async def test_a_submission_claims_no_more_than_the_free_slots(
    store: Store, make_provider: ProviderFactory
) -> None:
    wf = workflow_yaml("provision-test", "- name: nap\n  type: policy\n  config:\n    script: 'sleep 0.5'\n")
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    async with running_engine(store, catalog, concurrency=1) as engine:
        first = await specs.submit(store, catalog, spec_for("slot-a"), engine=engine)
        second = await specs.submit(store, catalog, spec_for("slot-b"), engine=engine)
        assert [r.state for r in first.resources] == ["PROVISIONING"]
        assert [r.state for r in second.resources] == ["REQUESTED"]  # the one slot is taken
        await settle(store, "slot-a")
        await settle(store, "slot-b")
    assert [r.state for r in await resources(store, "slot-b")] == ["ACTIVE"]


async def test_claims_of_a_submission_that_did_not_commit_never_run(store: Store, catalog: Catalog) -> None:
    """Concurrent first submissions of one application: all but one insert loses and is retried as an
    update; whatever the losers claimed was never committed, so it runs nowhere."""
    async with running_engine(store, catalog) as engine:
        await asyncio.gather(*(specs.submit(store, catalog, MOCK_SPEC, engine=engine) for _ in range(8)))
        await settle(store, "demo-app-mock")
        for _ in range(100):
            if not engine._running:
                break
            await asyncio.sleep(0.05)
        assert engine._reserved == 0 and not engine._running
    async with store.session() as session:
        runs = await session.scalar(select(func.count()).select_from(models.WorkflowExecution))
    assert runs == 1
    assert [r.state for r in await resources(store, "demo-app-mock")] == ["ACTIVE"]


async def test_runs_never_exceed_the_concurrency_while_submissions_and_passes_claim_at_once(
    store: Store, make_provider: ProviderFactory, tmp_path: Path
) -> None:
    """Claim passes (for what waited) and submissions (claiming their own) race for the same free slots;
    each step records how many steps were running when it started."""
    running, seen = tmp_path / "running", tmp_path / "seen"
    running.mkdir()
    script = f"touch {running}/$$; ls {running} | wc -l >> {seen}; sleep 0.05; rm {running}/$$"
    wf = workflow_yaml(
        "provision-test", f"- name: count\n  type: policy\n  config:\n    script: '{script}'\n"
    )
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    async with running_engine(store, catalog, concurrency=3) as engine:

        async def submitter(k: int) -> None:
            for i in range(8):
                await specs.submit(store, catalog, spec_for(f"race-{k}-{i}"), engine=engine)
                await asyncio.sleep(0.01 * (k % 3))

        await asyncio.gather(*(submitter(k) for k in range(8)))
        for k in range(8):
            for i in range(8):
                await settle(store, f"race-{k}-{i}")
    counts = [int(line) for line in seen.read_text().split()]
    assert len(counts) == 64
    assert max(counts) <= 3, counts
