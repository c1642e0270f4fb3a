"""The `graph` query through a real server: application → resources → provider → workflow, dependencies,
and only the caller's team's applications."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gql import GraphQLRequest, gql
from gql.transport.exceptions import TransportQueryError

from tests.e2e.conftest import http_client, ws_client
from tests.e2e.server import Server
from tests.e2e.test_auth import create_token

FIXTURE = Path(__file__).parent / "fixtures" / "postgres-mock-app.yaml"
SUBMIT = gql("mutation($spec: String!) { submitSpec(spec: $spec) { resources { id } } }")
ACTIVE = gql(
    "subscription($app: String!) { resourceStateChanged(application: $app, afterSequence: 0)"
    " { toState resource { name } } }"
)
GRAPH = "query($app: String) { graph(application: $app) { nodes { id kind label } edges { source target label } mermaid dot } }"

TWO = """
apiVersion: score.dev/v1b1
metadata:
  name: {name}
containers:
  main:
    image: nginx
resources:
  database:
    type: postgres-mock
    properties:
      db_name: graph_db
  cache:
    type: postgres-mock
    properties:
      db_name: ${{resources.database.database_name}}
"""


async def submit_and_wait(server: Server, token: str, spec: str, app: str, count: int) -> None:
    async with http_client(server, token) as session:
        await session.execute(GraphQLRequest(SUBMIT, variable_values={"spec": spec}))
    active: set[str] = set()
    async with ws_client(server, token) as live:
        async for event in live.subscribe(GraphQLRequest(ACTIVE, variable_values={"app": app})):
            if event["resourceStateChanged"]["toState"] == "ACTIVE":
                active.add(event["resourceStateChanged"]["resource"]["name"])
            if len(active) == count:
                break


async def graph(server: Server, token: str, app: str | None = None) -> dict[str, Any]:
    async with http_client(server, token) as session:
        return (await session.execute(GraphQLRequest(gql(GRAPH), variable_values={"app": app})))["graph"]


async def test_graph_of_an_application_and_team_scoping(server: Server) -> None:
    blue, _ = await create_token(server, "graph-blue")
    red, _ = await create_token(server, "graph-red")
    await submit_and_wait(server, blue, TWO.format(name="graph-blue-app"), "graph-blue-app", 2)
    await submit_and_wait(
        server, red, FIXTURE.read_text().replace("demo-app-mock", "graph-red-app"), "graph-red-app", 1
    )

    found = await graph(server, blue, "graph-blue-app")
    labels = {(n["kind"], n["label"]) for n in found["nodes"]}
    assert labels == {
        ("application", "graph-blue-app"),
        ("resource", "database (postgres-mock)"),
        ("resource", "cache (postgres-mock)"),
        ("provider", "database-team"),
        ("workflow", "provision-postgres-mock"),
    }
    edges = {(e["source"], e["label"], e["target"]) for e in found["edges"]}
    assert ("resource:graph-blue-app/cache", "depends on", "resource:graph-blue-app/database") in edges
    assert ("application:graph-blue-app", "has", "resource:graph-blue-app/database") in edges
    assert ("provider:database-team", "runs", "workflow:database-team/provision-postgres-mock") in edges
    assert found["mermaid"].startswith("flowchart LR\n") and '"graph-blue-app"' in found["mermaid"]
    assert found["dot"].startswith("digraph innominatus {") and '"depends on"' in found["dot"]

    # A member sees only its team's applications; another team's name answers like an unknown one.
    everything = await graph(server, blue)
    apps = {n["label"] for n in everything["nodes"] if n["kind"] == "application"}
    assert apps == {"graph-blue-app"}
    with pytest.raises(TransportQueryError) as refused:
        await graph(server, blue, "graph-red-app")
    assert refused.value.errors and refused.value.errors[0]["extensions"]["code"] == "NOT_FOUND"
