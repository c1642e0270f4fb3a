"""The acceptance story, against a real uvicorn, with `gql` over HTTP and websockets."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from gql import GraphQLRequest, gql
from gql.transport.exceptions import TransportQueryError

from tests.conftest import FIXTURES, fresh_pg_database
from tests.e2e.conftest import http_client, ws_client
from tests.e2e.server import Server, run_server

SPEC = (FIXTURES / "postgres-mock-app.yaml").read_text()

PROVIDERS = gql("query { providers { name version category capabilities } }")
SUBMIT = gql(
    "mutation($spec: String!) { submitSpec(spec: $spec) { application { name revision } "
    "resources { id name type state } } }"
)
SUBSCRIBE = gql(
    "subscription($app: String, $after: Int) { resourceStateChanged(application: $app, afterSequence: $after) {"
    " sequence fromState toState at resource { id name type state outputs } } }"
)
RESOURCES = gql("query($app: String) { resources(application: $app) { id name state outputs errorMessage } }")
WORKFLOWS = gql(
    "query($app: String) { workflows(application: $app) { id workflowName status "
    "steps { name type status logs errorMessage } } }"
)


def test_health_and_ready(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "healthy"}
    assert httpx.get(f"{server.url}/ready").status_code == 200


def test_sqlite_file_is_in_working_directory(server: Server) -> None:
    embedded = "(database sqlite+aiosqlite:///innominatus.db)" in server.output()
    # The embedded default is a SQLite file in the working directory; on PostgreSQL there is none.
    assert (server.workdir / "innominatus.db").is_file() is embedded
    if not embedded:
        assert "(database postgresql+asyncpg://" in server.output()


async def test_providers_query(server: Server) -> None:
    async with http_client(server) as session:
        result = await session.execute(PROVIDERS)
    [db_team] = [p for p in result["providers"] if p["name"] == "database-team"]
    assert db_team["capabilities"] == ["postgres", "postgresql", "postgres-mock"]  # as the demo guide shows
    assert db_team["version"] == "1.0.0"


async def test_acceptance_story(server: Server) -> None:
    app = "demo-app-mock"
    events: list[dict[str, Any]] = []
    subscribed = asyncio.Event()

    async def watch() -> None:
        async with ws_client(server) as ws:
            subscription = ws.subscribe(GraphQLRequest(SUBSCRIBE, variable_values={"app": app}))
            subscribed.set()
            async with contextlib.aclosing(subscription):  # closing it ends the websocket at once
                async for item in subscription:
                    events.append(item["resourceStateChanged"])
                    if item["resourceStateChanged"]["toState"] in ("ACTIVE", "FAILED"):
                        return

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(subscribed.wait(), 10)
    await asyncio.sleep(0.3)  # the subscribe message is on the wire before we submit
    async with http_client(server) as session:
        submitted = await session.execute(GraphQLRequest(SUBMIT, variable_values={"spec": SPEC}))
    payload = submitted["submitSpec"]
    assert payload["application"] == {"name": app, "revision": 1}
    # With a free engine slot the submission itself claimed the resource: its answer shows it started.
    assert [(r["name"], r["type"], r["state"]) for r in payload["resources"]] == [
        ("database", "postgres-mock", "PROVISIONING")
    ]
    await asyncio.wait_for(watcher, 30)

    assert [(e["fromState"], e["toState"]) for e in events] == [
        (None, "REQUESTED"),
        ("REQUESTED", "PROVISIONING"),
        ("PROVISIONING", "ACTIVE"),
    ]
    sequences = [e["sequence"] for e in events]
    assert sequences == sorted(sequences) and len(set(sequences)) == 3
    assert all(
        e["resource"]["name"] == "database" and e["resource"]["type"] == "postgres-mock" for e in events
    )
    assert events[-1]["resource"]["state"] == "ACTIVE"

    async with http_client(server) as session:
        [resource] = (await session.execute(GraphQLRequest(RESOURCES, variable_values={"app": app})))[
            "resources"
        ]
        workflows = (await session.execute(GraphQLRequest(WORKFLOWS, variable_values={"app": app})))[
            "workflows"
        ]
    assert resource["state"] == "ACTIVE"
    outputs = resource["outputs"]
    assert set(outputs) >= {"connection_string", "username", "password", "host", "port", "database_name"}
    assert outputs["connection_string"] == (
        f"postgresql://{outputs['username']}:{outputs['password']}@{outputs['host']}:{outputs['port']}/"
        f"{outputs['database_name']}"
    )
    [run] = workflows
    assert (run["workflowName"], run["status"]) == ("provision-postgres-mock", "SUCCEEDED")
    assert [(s["name"], s["type"], s["status"]) for s in run["steps"]] == [
        ("create-mock-database", "policy", "SUCCEEDED"),
        ("wait-for-ready", "policy", "SUCCEEDED"),
        ("generate-credentials", "policy", "SUCCEEDED"),
    ]
    assert "Creating mock PostgreSQL database demo_db" in run["steps"][0]["logs"]

    detail = gql(
        "query($id: ID!) { resource(id: $id) { application provider transitions { fromState toState reason at } "
        "workflowExecution { id workflowName provider resource { id } } } }"
    )
    async with http_client(server) as session:
        one = (await session.execute(GraphQLRequest(detail, variable_values={"id": resource["id"]})))[
            "resource"
        ]
    assert (one["application"], one["provider"]) == (app, "database-team")
    assert [(t["fromState"], t["toState"]) for t in one["transitions"]] == [
        (None, "REQUESTED"),
        ("REQUESTED", "PROVISIONING"),
        ("PROVISIONING", "ACTIVE"),
    ]
    assert one["workflowExecution"]["id"] == run["id"]
    assert one["workflowExecution"]["resource"]["id"] == resource["id"]

    # A client that reconnects with afterSequence gets the stored history first.
    replayed: list[dict[str, Any]] = []
    async with ws_client(server) as ws:
        replay = ws.subscribe(GraphQLRequest(SUBSCRIBE, variable_values={"app": app, "after": 0}))
        async with contextlib.aclosing(replay):
            async for item in replay:
                replayed.append(item["resourceStateChanged"])
                if len(replayed) == 3:
                    break
    assert [e["sequence"] for e in replayed] == sequences


async def test_invalid_spec_reports_problems_and_stores_nothing(server: Server) -> None:
    bad = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: broken-app\ncontainers:\n  main:\n    image: x\n"
        "resources:\n  database:\n    properties:\n      size: small\n"
    )
    async with http_client(server) as session:
        with pytest.raises(TransportQueryError) as err:
            await session.execute(GraphQLRequest(SUBMIT, variable_values={"spec": bad}))
        [error] = err.value.errors
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert {"path": "resources.database.type", "message": "is required"} in error["extensions"][
            "problems"
        ]
        assert (await session.execute(GraphQLRequest(RESOURCES, variable_values={"app": "broken-app"})))[
            "resources"
        ] == []


async def test_unknown_type_lists_known_types(server: Server) -> None:
    spec = SPEC.replace("demo-app-mock", "mongo-app").replace("type: postgres-mock", "type: mongodb")
    async with http_client(server) as session:
        with pytest.raises(TransportQueryError) as err:
            await session.execute(GraphQLRequest(SUBMIT, variable_values={"spec": spec}))
    [problem] = err.value.errors[0]["extensions"]["problems"]
    assert problem["path"] == "resources.database.type"
    assert "mongodb" in problem["message"]
    assert "postgres-mock" in problem["message"] and "postgresql" in problem["message"]


async def test_unknown_ids_are_not_found(server: Server) -> None:
    async with http_client(server) as session:
        for query in (
            '{ resource(id: "nope") { id } }',
            '{ workflow(id: "nope") { id } }',
            '{ application(name: "nope") { name } }',
            '{ provider(name: "nope") { name } }',
        ):
            with pytest.raises(TransportQueryError) as err:
                await session.execute(gql(query))
            assert err.value.errors[0]["extensions"]["code"] == "NOT_FOUND"
            assert err.value.data is None


def test_body_over_one_mebibyte_is_refused(server: Server) -> None:
    big = "x" * (1024 * 1024 + 10)
    response = httpx.post(server.graphql, json={"query": SUBMIT_TEXT, "variables": {"spec": big}}, timeout=30)
    assert response.status_code == 413
    assert "larger than" in response.json()["errors"][0]["message"]


def test_graphiql_is_served(server: Server) -> None:
    response = httpx.get(server.graphql, headers={"accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


async def test_only_graphql_transport_ws_is_spoken(server: Server) -> None:
    import websockets

    async with websockets.connect(
        server.websocket, subprotocols=["graphql-transport-ws", "graphql-ws"]
    ) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "graphql-transport-ws"
    # The legacy protocol gets no session: the server closes with 4406.
    async with websockets.connect(server.websocket, subprotocols=["graphql-ws"]) as ws:  # type: ignore[list-item]
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4406


SUBMIT_TEXT = "mutation($spec: String!) { submitSpec(spec: $spec) { application { name } } }"


@pytest.mark.postgres
def test_ready_is_503_when_the_database_is_gone(tmp_path: Path, pg_server: str) -> None:
    url = fresh_pg_database(pg_server)
    with run_server(tmp_path, database_url=url.replace("postgresql://", "postgresql+asyncpg://", 1)) as srv:
        assert httpx.get(f"{srv.url}/ready").status_code == 200
        name = url.rsplit("/", 1)[1]
        asyncio.run(_drop(pg_server.rsplit("/", 1)[0] + "/postgres", name))
        response = httpx.get(f"{srv.url}/ready", timeout=10)
        assert response.status_code == 503
        assert httpx.get(f"{srv.url}/health").json() == {"status": "healthy"}


async def _drop(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def test_broken_provider_stops_the_server(tmp_path: Path) -> None:
    provider = tmp_path / "providers" / "broken"
    provider.mkdir(parents=True)
    (provider / "provider.yaml").write_text(
        "apiVersion: v1\nkind: Provider\nmetadata:\n  name: broken\n  version: 1.0.0\n"
        "capabilities:\n  resourceTypes: [thing]\n"
        "workflows:\n  - name: provision-thing\n    file: ./workflows/missing.yaml\n"
    )
    with (
        pytest.raises(RuntimeError) as err,
        run_server(tmp_path, args=["--providers-dir", str(tmp_path / "providers")]),
    ):
        pass
    assert "missing.yaml" in str(err.value)
    assert "workflow file not found" in str(err.value)


BAD_SPECS = {
    "malformed YAML": ("apiVersion: score.dev/v1b1\nmetadata: {name: x\n", "", "malformed YAML"),
    "not a mapping": ("- just\n- a list\n", "", "must be a mapping"),
    "duplicate keys": (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: dup-app\ncontainers:\n  main:\n    image: a\n"
        "resources:\n  db:\n    type: postgres-mock\n  db:\n    type: postgres-mock\n",
        "resources.db",
        "duplicate key 'db'",
    ),
    "wrong apiVersion": (
        "apiVersion: score.sh/v1b1\nmetadata:\n  name: old-app\ncontainers:\n  main:\n    image: a\n",
        "apiVersion",
        "score.dev/v1b1",
    ),
    "missing metadata.name": (
        "apiVersion: score.dev/v1b1\nmetadata: {}\ncontainers:\n  main:\n    image: a\n",
        "metadata.name",
        "is required",
    ),
    "missing containers": (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: no-containers\n",
        "containers",
        "is required",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
async def test_bad_specs_are_refused_with_problems(server: Server, case: str) -> None:
    text, path, fragment = BAD_SPECS[case]
    async with http_client(server) as session:
        before = (await session.execute(gql("{ applications { name revision } }")))["applications"]
        with pytest.raises(TransportQueryError) as err:
            await session.execute(GraphQLRequest(SUBMIT, variable_values={"spec": text}))
        after = (await session.execute(gql("{ applications { name revision } }")))["applications"]
    [error] = err.value.errors
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    problems = error["extensions"]["problems"]
    assert any(p["path"] == path and fragment in p["message"] for p in problems), problems
    assert before == after


async def test_twenty_concurrent_submissions_make_one_resource(server: Server) -> None:
    spec = SPEC.replace("demo-app-mock", "race-app")
    async with http_client(server) as session:
        results = await asyncio.gather(
            *(session.execute(GraphQLRequest(SUBMIT, variable_values={"spec": spec})) for _ in range(20))
        )
        rows = (await session.execute(GraphQLRequest(RESOURCES, variable_values={"app": "race-app"})))[
            "resources"
        ]
    assert {r["submitSpec"]["application"]["revision"] for r in results} == {1}
    assert len(rows) == 1
    assert len({r["submitSpec"]["resources"][0]["id"] for r in results}) == 1
