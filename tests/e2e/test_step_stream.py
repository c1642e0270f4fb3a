"""The `workflowStepChanged` subscription against a real server, over graphql-transport-ws with `gql`.

The server loads the shipped `database-team` provider plus two of ours: `gated-thing` (a step that
waits for a file, so a test can subscribe by workflow id before anything happens) and `flaky-thing`
(a step that fails twice, then succeeds).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gql import GraphQLRequest, gql

from tests.conftest import FIXTURES, PROVIDERS, workflow_yaml
from tests.e2e.conftest import http_client, ws_client
from tests.e2e.server import Server, run_server

MOCK_SPEC = (FIXTURES / "postgres-mock-app.yaml").read_text()
MOCK_STEPS = ["create-mock-database", "wait-for-ready", "generate-credentials"]
MOCK_LINES = {
    "create-mock-database": ["Creating mock PostgreSQL database demo_db", "Mock database created"],
    "wait-for-ready": ["Waiting for demo_db to accept connections", "Database is ready"],
    "generate-credentials": ["Generated credentials for user demo_db_app"],
}

STEP_CHANGED = gql(
    "subscription($app: String, $workflow: ID) { workflowStepChanged(application: $app, workflowId: $workflow) "
    "{ workflowId application step { name status attempts } logLine at } }"
)
SUBMIT = gql("mutation($spec: String!) { submitSpec(spec: $spec) { resources { id name state } } }")
WORKFLOWS = gql(
    "query($app: String) { workflows(application: $app) { id status steps { name status attempts logs } } }"
)
RESOURCES = gql("query($app: String) { resources(application: $app) { id state outputs } }")

Event = dict[str, Any]


def _spec(app: str, rtype: str) -> str:
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\ncontainers:\n  main:\n    image: nginx:latest\n"
        f"resources:\n  thing:\n    type: {rtype}\n"
    )


def _provider(root: Path, name: str, rtype: str, workflow: str, steps: str) -> None:
    folder = root / name
    (folder / "workflows").mkdir(parents=True)
    (folder / "workflows" / f"{workflow}.yaml").write_text(workflow_yaml(workflow, steps))
    (folder / "provider.yaml").write_text(
        f"apiVersion: v1\nkind: Provider\nmetadata:\n  name: {name}\n  version: 1.0.0\n  category: test\n"
        f"capabilities:\n  resourceTypeCapabilities:\n    - type: {rtype}\n      operations:\n"
        f"        create:\n          workflow: {workflow}\n"
        f"workflows:\n  - name: {workflow}\n    file: ./workflows/{workflow}.yaml\n    operation: create\n"
    )


@pytest.fixture(scope="module")
def gates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gates")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, gates: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("stream")
    providers = root / "providers"
    shutil.copytree(PROVIDERS / "database-team", providers / "database-team")
    _provider(
        providers,
        "gate-team",
        "gated-thing",
        "gated-create",
        f"""\
- name: wait-for-gate
  type: policy
  timeout: 30
  config:
    script: |
      for _ in $(seq 1 200); do [ -e '{gates}'/{{{{ app.name }}}} ] && break; sleep 0.05; done
      echo "gate of {{{{ app.name }}}} open"
- name: after-gate
  type: policy
  timeout: 30
  config:
    script: |
      echo "after the gate of {{{{ app.name }}}}"
""",
    )
    _provider(
        providers,
        "flaky-team",
        "flaky-thing",
        "flaky-create",
        f"""\
- name: flaky
  type: policy
  timeout: 30
  retries: 2
  retryDelay: 0.1
  config:
    script: |
      counter='{root}'/flaky-{{{{ app.name }}}}.count
      n=$(( $(cat "$counter" 2>/dev/null || echo 0) + 1 ))
      echo "$n" > "$counter"
      echo "flaky attempt $n"
      if [ "$n" -lt 3 ]; then echo "not yet" >&2; exit 1; fi
""",
    )
    workdir = root / "work"
    workdir.mkdir()
    with run_server(workdir, args=["--providers-dir", str(providers)]) as srv:
        yield srv


async def _execute(server: Server, document: Any, **variables: Any) -> dict[str, Any]:
    async with http_client(server) as session:
        return await session.execute(GraphQLRequest(document, variable_values=variables))


async def _watch(
    server: Server, variables: dict[str, Any], done: Callable[[Event], bool], subscribed: asyncio.Event
) -> list[Event]:
    """Events of one subscription until `done` says the last one was the last one wanted."""
    events: list[Event] = []
    # aclosing: leaving the loop ends the subscription at once; a generator left open makes the
    # transport wait its whole close_timeout (10 s) when the client closes
    async with (
        ws_client(server) as ws,
        contextlib.aclosing(ws.subscribe(GraphQLRequest(STEP_CHANGED, variable_values=variables))) as stream,
    ):
        subscribed.set()
        async for item in stream:
            event = item["workflowStepChanged"]
            events.append(event)
            if done(event):
                break
    return events


async def _subscribe(
    server: Server, variables: dict[str, Any], done: Callable[[Event], bool]
) -> asyncio.Task[list[Event]]:
    subscribed = asyncio.Event()
    task = asyncio.create_task(_watch(server, variables, done, subscribed))
    await asyncio.wait_for(subscribed.wait(), 10)
    await asyncio.sleep(0.5)  # the subscribe message has reached the server before anything happens
    return task


def _final(step: str, status: str = "SUCCEEDED") -> Callable[[Event], bool]:
    return lambda e: e["logLine"] is None and e["step"]["name"] == step and e["step"]["status"] == status


def _statuses(events: list[Event], step: str) -> list[tuple[str, int]]:
    return [
        (e["step"]["status"], e["step"]["attempts"])
        for e in events
        if e["logLine"] is None and e["step"]["name"] == step
    ]


async def test_steps_and_log_lines_stream_as_they_happen(server: Server) -> None:
    app = "stream-app"
    watcher = await _subscribe(server, {"app": app}, _final(MOCK_STEPS[-1]))
    await _execute(server, SUBMIT, spec=MOCK_SPEC.replace("demo-app-mock", app))
    events = await asyncio.wait_for(watcher, 30)

    [run] = (await _execute(server, WORKFLOWS, app=app))["workflows"]
    [resource] = (await _execute(server, RESOURCES, app=app))["resources"]
    assert {e["workflowId"] for e in events} == {run["id"]}
    assert {e["application"] for e in events} == {app}
    stamps = [e["at"] for e in events]
    assert stamps == sorted(stamps)

    # Steps come one after the other: every event of a step lies between its RUNNING and SUCCEEDED.
    order = [e["step"]["name"] for e in events]
    assert [name for i, name in enumerate(order) if i == 0 or order[i - 1] != name] == MOCK_STEPS
    for name in MOCK_STEPS:
        mine = [e for e in events if e["step"]["name"] == name]
        assert _statuses(events, name) == [("RUNNING", 1), ("SUCCEEDED", 1)], mine
        assert mine[0]["logLine"] is None and mine[0]["step"]["status"] == "RUNNING"
        assert mine[-1]["logLine"] is None and mine[-1]["step"]["status"] == "SUCCEEDED"
        lines = [e["logLine"] for e in mine[1:-1]]
        assert all(line is not None for line in lines), mine
        assert all(e["step"]["attempts"] == 1 for e in mine)
        for text in MOCK_LINES[name]:
            assert text in lines, (name, lines)
    create_lines = [e["logLine"] for e in events if e["step"]["name"] == MOCK_STEPS[0] and e["logLine"]]
    assert create_lines[0] == "Creating mock PostgreSQL database demo_db"
    assert create_lines[-1] == "Mock database created"

    # The secret made in a step is an output, never a log line.
    assert resource["state"] == "ACTIVE"
    password = resource["outputs"]["password"]
    assert password
    assert not any(password in (e["logLine"] or "") for e in events)
    assert not any(password in step["logs"] for step in run["steps"])


async def test_filters_keep_other_runs_out(server: Server, gates: Path) -> None:
    one, two = "gate-one", "gate-two"
    finished: set[str] = set()

    def both_finished(e: Event) -> bool:
        if _final("after-gate")(e):
            finished.add(e["application"])
        return finished >= {one, two}

    everything = await _subscribe(server, {}, both_finished)  # unfiltered: sees both apps
    by_app = await _subscribe(server, {"app": two}, _final("after-gate"))
    for app in (one, two):
        await _execute(server, SUBMIT, spec=_spec(app, "gated-thing"))
    ids: dict[str, str] = {}
    for _ in range(100):  # both runs claimed and waiting at their gate
        for app in (one, two):
            runs = (await _execute(server, WORKFLOWS, app=app))["workflows"]
            if runs and runs[0]["steps"][0]["status"] == "RUNNING":
                ids[app] = runs[0]["id"]
        if len(ids) == 2:
            break
        await asyncio.sleep(0.1)
    assert len(ids) == 2, ids

    by_workflow = await _subscribe(server, {"workflow": ids[one]}, _final("after-gate"))
    (gates / two).touch()
    app_events = await asyncio.wait_for(by_app, 20)
    (gates / one).touch()
    workflow_events = await asyncio.wait_for(by_workflow, 20)
    all_events = await asyncio.wait_for(everything, 20)

    assert {(e["workflowId"], e["application"]) for e in all_events} == {(ids[one], one), (ids[two], two)}

    assert workflow_events, "nothing streamed for the workflowId filter"
    assert {(e["workflowId"], e["application"]) for e in workflow_events} == {(ids[one], one)}
    assert _statuses(workflow_events, "wait-for-gate") == [("SUCCEEDED", 1)]  # subscribed mid-step
    assert _statuses(workflow_events, "after-gate") == [("RUNNING", 1), ("SUCCEEDED", 1)]
    assert f"gate of {one} open" in [e["logLine"] for e in workflow_events]
    assert f"after the gate of {one}" in [e["logLine"] for e in workflow_events]

    assert {(e["workflowId"], e["application"]) for e in app_events} == {(ids[two], two)}
    assert _statuses(app_events, "wait-for-gate") == [("RUNNING", 1), ("SUCCEEDED", 1)]
    assert _statuses(app_events, "after-gate") == [("RUNNING", 1), ("SUCCEEDED", 1)]
    assert f"after the gate of {two}" in [e["logLine"] for e in app_events]


async def test_retries_stream_each_attempt(server: Server) -> None:
    app = "flaky-app"
    watcher = await _subscribe(server, {"app": app}, _final("flaky", "SUCCEEDED"))
    await _execute(server, SUBMIT, spec=_spec(app, "flaky-thing"))
    events = await asyncio.wait_for(watcher, 20)

    statuses = _statuses(events, "flaky")
    attempts = [a for _, a in statuses]
    assert attempts == sorted(attempts), statuses
    assert sorted(set(attempts)) == [1, 2, 3], statuses
    assert statuses[-1] == ("SUCCEEDED", 3)
    assert all(status == "RUNNING" for status, _ in statuses[:-1]), statuses  # FAILED only when final
    for n in (1, 2, 3):
        first = next(e for e in events if e["step"]["attempts"] == n)
        assert (first["logLine"], first["step"]["status"]) == (None, "RUNNING")  # each attempt starts
        lines = [e["logLine"] for e in events if e["logLine"] is not None and e["step"]["attempts"] == n]
        assert f"flaky attempt {n}" in lines, (n, lines)
    assert [e["logLine"] for e in events if e["logLine"] == "not yet"] == ["not yet", "not yet"]
    [run] = (await _execute(server, WORKFLOWS, app=app))["workflows"]
    assert run["status"] == "SUCCEEDED"
    assert [(s["name"], s["status"], s["attempts"]) for s in run["steps"]] == [("flaky", "SUCCEEDED", 3)]
