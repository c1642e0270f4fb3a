"""Crash safety against real `innominatus serve` processes: SIGKILL (and SIGTERM) the server while a
workflow step runs, start a new server on the same database, and check what the new one makes of it.

Each test writes its own provider: step 1 is quick and records each run in a marker file; step 2
records each run in its marker file, then sleeps a few seconds (the window in which we stop the
server). Every policy script also appends its process-group id to a file, so teardown can kill what
a SIGKILLed server left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gql import Client, GraphQLRequest, gql

from tests.conftest import fresh_pg_database, workflow_yaml
from tests.e2e.conftest import http_client
from tests.e2e.server import Server, run_server

APP = "crash-app"
STEP_SLEEP = 3  # seconds step 2 sleeps: the window in which the server is stopped
SPEC = f"""\
apiVersion: score.dev/v1b1
metadata:
  name: {APP}
containers:
  main:
    image: nginx:latest
resources:
  db:
    type: test-db
"""

SUBMIT = gql(
    "mutation($spec: String!) { submitSpec(spec: $spec) { application { name revision } "
    "resources { id name type state } } }"
)
WORKFLOWS = gql(
    "query($app: String) { workflows(application: $app) { id workflowName status errorMessage "
    "steps { name status attempts errorMessage } } }"
)
RESOURCES = gql(
    "query($app: String) { resources(application: $app) { id name state errorMessage "
    "transitions { fromState toState reason } } }"
)


@dataclass
class Setup:
    providers: Path
    database_url: str
    marker1: Path
    marker2: Path
    pids: Path
    root: Path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'innominatus.db'}"
    url = fresh_pg_database(request.getfixturevalue("pg_server"))
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture
def setup_factory(
    make_provider: Callable[..., Path], database_url: str, tmp_path: Path
) -> Iterator[Callable[..., Setup]]:
    pids = tmp_path / "pgids"

    def build(*, idempotent: bool = True) -> Setup:
        marker1 = tmp_path / "step1.marker"
        marker2 = tmp_path / "step2.marker"
        flag = "" if idempotent else "idempotent: false\n  "
        steps = f"""\
- name: quick-step
  type: policy
  timeout: 30
  config:
    script: |
      echo $$ >> '{pids}'
      echo run >> '{marker1}'
      echo first
- name: slow-step
  type: policy
  timeout: 60
  {flag}config:
    script: |
      echo $$ >> '{pids}'
      echo run >> '{marker2}'
      echo "slow step started"
      sleep {STEP_SLEEP}
      echo "slow step done"
"""
        providers = make_provider({"crash-create": workflow_yaml("crash-create", steps)})
        return Setup(providers, database_url, marker1, marker2, pids, tmp_path)

    yield build
    _kill_leftovers(pids)


def _kill_leftovers(pids: Path) -> None:
    """Kill the process groups of policy scripts a killed server orphaned (only if still ours)."""
    if not pids.exists():
        return
    for raw in set(pids.read_text().split()):
        pgid = int(raw)
        try:
            cmdline = Path(f"/proc/{pgid}/cmdline").read_bytes()
        except OSError:
            continue  # gone already
        if b"innominatus-policy-" not in cmdline:
            continue  # the id was reused by some unrelated process
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def _client(server: Server) -> Client:
    return http_client(server)


async def _query(server: Server, document: Any) -> dict[str, Any]:
    async with _client(server) as session:
        return await session.execute(GraphQLRequest(document, variable_values={"app": APP}))


async def _submit(server: Server) -> None:
    async with _client(server) as session:
        result = await session.execute(GraphQLRequest(SUBMIT, variable_values={"spec": SPEC}))
    assert [(r["name"], r["state"]) for r in result["submitSpec"]["resources"]] == [
        ("db", "PROVISIONING")
    ]  # claimed by the submission itself


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def _wait_until_slow_step_runs(server: Server, setup: Setup, timeout: float = 15) -> None:
    """Until step 2 is RUNNING in the database and its script has written its marker."""
    deadline = time.monotonic() + timeout
    while True:
        workflows = (await _query(server, WORKFLOWS))["workflows"]
        if workflows:
            [run] = workflows
            status = {s["name"]: s["status"] for s in run["steps"]}
            if status.get("slow-step") == "RUNNING" and _lines(setup.marker2) == 1:
                assert status["quick-step"] == "SUCCEEDED"
                return
        assert time.monotonic() < deadline, f"step 2 never ran: {workflows}\n{server.output()}"
        await asyncio.sleep(0.05)


async def _wait_for_resource(
    server: Server, states: set[str], timeout: float, also: Server | None = None
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        resources = (await _query(server, RESOURCES))["resources"]
        if resources and resources[0]["state"] in states:
            return resources[0]
        if time.monotonic() > deadline:
            logs = (also.output() + "\n--- new server ---\n" if also else "") + server.output()
            pytest.fail(f"resource did not reach {states} in {timeout}s: {resources}\n{logs}")
        await asyncio.sleep(0.1)


def _stop(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    process.send_signal(sig)
    process.wait(timeout=15)


async def _check_one_successful_run(server: Server, setup: Setup) -> None:
    resources = (await _query(server, RESOURCES))["resources"]
    workflows = (await _query(server, WORKFLOWS))["workflows"]
    assert len(resources) == 1, resources
    assert len(workflows) == 1, workflows  # resumed, not started over
    [resource], [run] = resources, workflows
    assert resource["state"] == "ACTIVE"
    assert run["status"] == "SUCCEEDED", run
    steps = {s["name"]: s for s in run["steps"]}
    assert (steps["quick-step"]["status"], steps["quick-step"]["attempts"]) == ("SUCCEEDED", 1)
    assert (steps["slow-step"]["status"], steps["slow-step"]["attempts"]) == ("SUCCEEDED", 2)
    assert _lines(setup.marker1) == 1  # the finished step did not run again
    assert _lines(setup.marker2) == 2  # the interrupted one did
    assert [(t["fromState"], t["toState"]) for t in resource["transitions"]] == [
        (None, "REQUESTED"),
        ("REQUESTED", "PROVISIONING"),
        ("PROVISIONING", "ACTIVE"),
    ]


async def test_kill_9_mid_step_resumes_at_the_interrupted_step(
    setup_factory: Callable[..., Setup],
) -> None:
    setup = setup_factory()
    lease = 2.0
    env = {"INNOMINATUS_LEASE_SECONDS": str(lease)}
    args = ["--providers-dir", str(setup.providers)]
    (first_dir := setup.root / "first").mkdir()
    (second_dir := setup.root / "second").mkdir()
    with run_server(first_dir, database_url=setup.database_url, args=args, env=env) as first:
        await _submit(first)
        await _wait_until_slow_step_runs(first, setup)
        first.process.kill()  # SIGKILL: no shutdown code runs, the lease stays held
        first.process.wait(timeout=10)
    killed_at = time.monotonic()

    with run_server(second_dir, database_url=setup.database_url, args=args, env=env) as second:
        # Resumed within the lease time (counted from the kill), plus some slack for a busy machine.
        while _lines(setup.marker2) < 2:
            assert time.monotonic() - killed_at < lease + 8, (
                f"not resumed {lease + 8}s after the kill\n{first.output()}\n---\n{second.output()}"
            )
            await asyncio.sleep(0.05)
        await _wait_for_resource(second, {"ACTIVE", "FAILED"}, timeout=30, also=first)
        await _check_one_successful_run(second, setup)
        assert "resuming execution" in second.output()


async def test_kill_9_fails_an_interrupted_step_that_is_not_idempotent(
    setup_factory: Callable[..., Setup],
) -> None:
    setup = setup_factory(idempotent=False)
    env = {"INNOMINATUS_LEASE_SECONDS": "2"}
    args = ["--providers-dir", str(setup.providers)]
    (first_dir := setup.root / "first").mkdir()
    (second_dir := setup.root / "second").mkdir()
    with run_server(first_dir, database_url=setup.database_url, args=args, env=env) as first:
        await _submit(first)
        await _wait_until_slow_step_runs(first, setup)
        first.process.kill()
        first.process.wait(timeout=10)

    with run_server(second_dir, database_url=setup.database_url, args=args, env=env) as second:
        resource = await _wait_for_resource(second, {"ACTIVE", "FAILED"}, timeout=30, also=first)
        await asyncio.sleep(0.5)  # anything that would (wrongly) happen next has time to show
        resources = (await _query(second, RESOURCES))["resources"]
        workflows = (await _query(second, WORKFLOWS))["workflows"]

    assert resource["state"] == "FAILED", resource
    assert "interrupted, not safe to re-run" in resource["errorMessage"]
    assert "slow-step" in resource["errorMessage"]
    assert len(resources) == 1 and resources[0]["state"] == "FAILED", resources
    assert len(workflows) == 1, workflows
    [run] = workflows
    assert run["status"] == "FAILED"
    assert "interrupted, not safe to re-run" in run["errorMessage"]
    steps = {s["name"]: s for s in run["steps"]}
    assert (steps["quick-step"]["status"], steps["quick-step"]["attempts"]) == ("SUCCEEDED", 1)
    assert steps["slow-step"]["attempts"] == 1  # not run again
    assert _lines(setup.marker1) == 1
    assert _lines(setup.marker2) == 1
    assert [(t["fromState"], t["toState"]) for t in resources[0]["transitions"]] == [
        (None, "REQUESTED"),
        ("REQUESTED", "PROVISIONING"),
        ("PROVISIONING", "FAILED"),
    ]
    # The run is over: none of its steps may still claim to be running.
    assert steps["slow-step"]["status"] == "FAILED", steps["slow-step"]
    assert "interrupted, not safe to re-run" in (steps["slow-step"]["errorMessage"] or "")


async def test_graceful_stop_releases_leases_so_the_next_server_resumes_at_once(
    setup_factory: Callable[..., Setup],
) -> None:
    setup = setup_factory()
    env = {"INNOMINATUS_LEASE_SECONDS": "60"}  # a resume that waited for the lease would time out
    args = ["--providers-dir", str(setup.providers)]
    (first_dir := setup.root / "first").mkdir()
    (second_dir := setup.root / "second").mkdir()
    with run_server(first_dir, database_url=setup.database_url, args=args, env=env) as first:
        await _submit(first)
        await _wait_until_slow_step_runs(first, setup)
        _stop(first.process, signal.SIGTERM)
        # uvicorn re-raises the signal after a clean shutdown: -SIGTERM is a normal exit here
        assert first.process.returncode in (0, -signal.SIGTERM), first.output()
        assert "Application shutdown complete" in first.output()

    started = time.monotonic()
    with run_server(second_dir, database_url=setup.database_url, args=args, env=env) as second:
        await _wait_for_resource(second, {"ACTIVE", "FAILED"}, timeout=15, also=first)
        assert time.monotonic() - started < 15
        await _check_one_successful_run(second, setup)
