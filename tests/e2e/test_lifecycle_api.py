"""Update, delete and retry through the GraphQL API of a real server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gql import GraphQLRequest, gql
from gql.client import AsyncClientSession
from gql.transport.exceptions import TransportQueryError

from tests.conftest import FIXTURES
from tests.e2e.conftest import http_client
from tests.e2e.server import Server

SPEC = (FIXTURES / "postgres-mock-app.yaml").read_text()

SUBMIT = gql("mutation($spec: String!) { submitSpec(spec: $spec) { application { name revision } changed } }")
RESOURCES = gql(
    "query($app: String) { resources(application: $app) { id name state properties outputs errorMessage "
    "dependsOn { name } requiredBy { name } workflowExecution { id workflowName operation status "
    "retryOf { id } steps { name status attempts } } } }"
)
APPLICATION = gql(
    "query($name: String!) { application(name: $name) { name revision workload pendingResources workloadErrors } }"
)
UPDATE = gql(
    "mutation($id: ID!, $p: JSON!) { updateResource(id: $id, properties: $p) { id state properties } }"
)
DELETE = gql("mutation($name: String!) { deleteApplication(name: $name) { name } }")
RETRY = gql("mutation($id: ID!) { retryResource(id: $id) { id state } }")


async def run(session: AsyncClientSession, doc: Any, **variables: Any) -> dict[str, Any]:
    return await session.execute(GraphQLRequest(doc, variable_values=variables))


async def until(
    session: AsyncClientSession, app: str, states: dict[str, str], timeout: float = 20
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            rows = (await run(session, RESOURCES, app=app))["resources"]
            live = {r["name"]: r for r in rows if r["state"] != "DELETED"}
            gone = {r["name"]: r for r in rows if r["state"] == "DELETED"}
            current = {**gone, **live}
            if all(n in current and current[n]["state"] == s for n, s in states.items()):
                return current
            await asyncio.sleep(0.1)


def spec_named(app: str) -> str:
    return SPEC.replace("demo-app-mock", app)


async def test_update_via_mutation_and_resubmission(server: Server) -> None:
    app = "upd-app"
    async with http_client(server) as s:
        await run(s, SUBMIT, spec=spec_named(app))
        db = (await until(s, app, {"database": "ACTIVE"}))["database"]
        password = db["outputs"]["password"]
        updated = (await run(s, UPDATE, id=db["id"], p={"size": "large"}))["updateResource"]
        assert updated["state"] == "UPDATING"
        assert updated["properties"]["size"] == "large"
        db = (await until(s, app, {"database": "ACTIVE"}))["database"]
        assert db["outputs"]["size"] == "large" and db["outputs"]["password"] == password
        assert db["workflowExecution"]["workflowName"] == "update-postgres-mock"

        with pytest.raises(TransportQueryError) as err:
            await run(s, UPDATE, id=db["id"], p=["not", "an", "object"])
        assert err.value.errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
        with pytest.raises(TransportQueryError) as err:
            await run(s, UPDATE, id="no-such-id", p={"size": "x"})
        assert err.value.errors[0]["extensions"]["code"] == "NOT_FOUND"

        # Unchanged resubmission of the same spec: no new revision.
        again = (await run(s, SUBMIT, spec=spec_named(app)))["submitSpec"]
        assert again["application"]["revision"] == 1


async def test_racing_updates_over_http(server: Server) -> None:
    app = "race-upd"
    async with http_client(server) as s:
        await run(s, SUBMIT, spec=spec_named(app))
        db = (await until(s, app, {"database": "ACTIVE"}))["database"]
        results = await asyncio.gather(
            run(s, UPDATE, id=db["id"], p={"replicas": 3}),
            run(s, UPDATE, id=db["id"], p={"replicas": 4}),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, TransportQueryError)]
        assert len(refused) == 1
        assert refused[0].errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert "is UPDATING" in refused[0].errors[0]["message"]
        await until(s, app, {"database": "ACTIVE"})


async def test_delete_application_keeps_history(server: Server) -> None:
    app = "del-app"
    spec = spec_named(app) + (
        "  reader:\n    type: postgres-mock\n    properties:\n      db_name: ${resources.database.database_name}_r\n"
    )
    async with http_client(server) as s:
        await run(s, SUBMIT, spec=spec)
        rows = await until(s, app, {"database": "ACTIVE", "reader": "ACTIVE"})
        assert [d["name"] for d in rows["reader"]["dependsOn"]] == ["database"]
        assert [d["name"] for d in rows["database"]["requiredBy"]] == ["reader"]
        assert (await run(s, DELETE, name=app))["deleteApplication"]["name"] == app
        rows = await until(s, app, {"database": "DELETED", "reader": "DELETED"})
        assert rows["database"]["workflowExecution"]["workflowName"] == "delete-postgres-mock"
        apps = (await s.execute(gql("{ applications { name } }")))["applications"]
        assert app not in [a["name"] for a in apps]
        with pytest.raises(TransportQueryError) as err:
            await run(s, APPLICATION, name=app)
        assert err.value.errors[0]["extensions"]["code"] == "NOT_FOUND"
        with pytest.raises(TransportQueryError) as err:
            await run(s, DELETE, name=app)
        assert err.value.errors[0]["extensions"]["code"] == "NOT_FOUND"
        history = (
            await run(
                s,
                gql("query($id: ID!) { resource(id: $id) { state transitions { toState } } }"),
                id=rows["database"]["id"],
            )
        )["resource"]
        assert [t["toState"] for t in history["transitions"]] == [
            "REQUESTED",
            "PROVISIONING",
            "ACTIVE",
            "DELETING",
            "DELETED",
        ]
        workflows = await run(
            s, gql("query($a: String) { workflows(application: $a) { workflowName } }"), a=app
        )
        assert sorted(w["workflowName"] for w in workflows["workflows"]) == [
            "delete-postgres-mock",
            "delete-postgres-mock",
            "provision-postgres-mock",
            "provision-postgres-mock",
        ]
        # The name is free again: a new submission starts a new life with a new revision.
        again = (await run(s, SUBMIT, spec=spec))["submitSpec"]
        assert again["application"]["revision"] == 2
        await until(s, app, {"database": "ACTIVE", "reader": "ACTIVE"})


async def test_retry_resource(server: Server) -> None:
    app = "retry-app"
    broken = spec_named(app).replace("      db_name: demo_db\n", "")  # the workflow requires db_name
    async with http_client(server) as s:
        await run(s, SUBMIT, spec=broken)
        db = (await until(s, app, {"database": "FAILED"}))["database"]
        assert "parameter 'db_name' is required" in db["errorMessage"]
        retried = (await run(s, RETRY, id=db["id"]))["retryResource"]
        assert retried["state"] == "PROVISIONING"  # it has left FAILED when the mutation returns
        db = (await until(s, app, {"database": "FAILED"}))["database"]
        assert db["workflowExecution"]["retryOf"] is not None
        with pytest.raises(TransportQueryError) as err:
            await run(s, RETRY, id="no-such-id")
        assert err.value.errors[0]["extensions"]["code"] == "NOT_FOUND"

    app2 = "retry-active"
    async with http_client(server) as s:
        await run(s, SUBMIT, spec=spec_named(app2))
        db = (await until(s, app2, {"database": "ACTIVE"}))["database"]
        with pytest.raises(TransportQueryError) as err:
            await run(s, RETRY, id=db["id"])
        assert err.value.errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert "only a FAILED resource can be retried" in err.value.errors[0]["message"]


async def test_workload_fields(server: Server) -> None:
    app = "wl-app"
    spec = spec_named(app).replace(
        "DB_NAME: ${resources.database.database_name}", "DB_NAME: ${resources.database.nope}"
    )
    async with http_client(server) as s:
        await run(s, SUBMIT, spec=spec)
        early = (await run(s, APPLICATION, name=app))["application"]
        if early["pendingResources"]:
            assert early["workload"] is None
            assert early["pendingResources"] == ["database"]
        db = (await until(s, app, {"database": "ACTIVE"}))["database"]
        done = (await run(s, APPLICATION, name=app))["application"]
    assert done["pendingResources"] == []
    variables = done["workload"]["backend"]["variables"]
    assert variables["DATABASE_URL"] == db["outputs"]["connection_string"]
    assert variables["DB_NAME"] == "${resources.database.nope}"
    assert done["workloadErrors"] == ["${resources.database.nope}: resource 'database' has no output 'nope'"]


async def test_bad_resubmissions_change_nothing(server: Server) -> None:
    app = "bad-resub"
    async with http_client(server) as s:
        await run(s, SUBMIT, spec=spec_named(app))
        await until(s, app, {"database": "ACTIVE"})
        changed_type = spec_named(app).replace("type: postgres-mock", "type: postgres")
        with pytest.raises(TransportQueryError) as err:
            await run(s, SUBMIT, spec=changed_type)
        problem = err.value.errors[0]["extensions"]["problems"][0]
        assert problem["path"] == "resources.database.type"
        cycle = spec_named(app).replace("db_name: demo_db", "db_name: ${resources.database.host}")
        with pytest.raises(TransportQueryError) as err:
            await run(s, SUBMIT, spec=cycle)
        assert "dependency cycle" in err.value.errors[0]["extensions"]["problems"][0]["message"]
        rows = (await run(s, RESOURCES, app=app))["resources"]
        assert [(r["name"], r["state"], r["properties"]["db_name"]) for r in rows] == [
            ("database", "ACTIVE", "demo_db")
        ]
        assert (await run(s, APPLICATION, name=app))["application"]["revision"] == 1
