"""The `postgres` step through a real server and a real PostgreSQL target whose `public` schema anyone
may write to: names that read alike stay apart across teams, and a function an app's role plants
there never runs with the admin's rights."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import REPO, create_pg_database
from tests.e2e.server import ADMIN_TOKEN, Server, run_server

pytestmark = pytest.mark.postgres

SUBMIT = "mutation($spec: String!) { submitSpec(spec: $spec) { application { name } } }"
RESOURCES = "query($app: String) { resources(application: $app) { id name state errorMessage outputs } }"
UPDATE = "mutation($id: ID!, $p: JSON!) { updateResource(id: $id, properties: $p) { state } }"


def call(server: Server, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(
        server.graphql,
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).json()
    assert not answer.get("errors"), answer
    return dict(answer["data"])


def spec(app: str, resource: str) -> str:
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\ncontainers:\n  main:\n    image: a\n"
        f"resources:\n  {resource}:\n    type: postgres\n"
    )


def wait_active(server: Server, app: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        [row] = call(server, ADMIN_TOKEN, RESOURCES, {"app": app})["resources"]
        if row["state"] == "ACTIVE":
            return row
        assert row["state"] != "FAILED", row
        assert time.monotonic() < deadline, row
        time.sleep(0.2)


@pytest.fixture(scope="module")
def target(pg_server: str) -> str:
    url = asyncio.run(create_pg_database(pg_server))

    async def open_public() -> None:
        conn = await asyncpg.connect(url)
        await conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        await conn.close()

    asyncio.run(open_public())
    return url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, target: str) -> Iterator[Server]:
    env = {"INNOMINATUS_POSTGRES_ADMIN_URL": target}
    args = ["--config", str(REPO / "admin-config.yaml")]
    with run_server(tmp_path_factory.mktemp("pg-target"), args=args, env=env) as srv:
        yield srv


def member(server: Server, team: str) -> str:
    created = call(
        server, ADMIN_TOKEN, "mutation($t: String!) { createToken(team: $t) { token } }", {"t": team}
    )
    return str(created["createToken"]["token"])


def test_names_that_read_alike_stay_apart_and_planted_functions_never_run(
    server: Server, target: str
) -> None:
    shop = f"shop{uuid.uuid4().hex[:6]}"
    teams = {shop: member(server, "team-shop"), f"{shop}-api": member(server, "team-shop-api")}
    call(server, teams[shop], SUBMIT, {"spec": spec(shop, "api-db")})
    call(server, teams[f"{shop}-api"], SUBMIT, {"spec": spec(f"{shop}-api", "db")})
    first, second = wait_active(server, shop), wait_active(server, f"{shop}-api")
    role = first["outputs"]["username"]
    assert first["outputs"]["database_name"] != second["outputs"]["database_name"]

    async def plant_update_and_check() -> tuple[bool, int]:
        host_part, database = target.rsplit("/", 1)
        planter = await asyncpg.connect(f"{host_part.replace('postgres@', f'{role}@')}/{database}")
        for args in ("text, text", "text, text, text"):
            params = ", ".join(f"${i + 1}" for i in range(args.count("text")))
            await planter.execute(
                f"CREATE FUNCTION public.format({args}) RETURNS text LANGUAGE plpgsql AS $f$ BEGIN "
                f"EXECUTE 'ALTER ROLE {role} SUPERUSER'; RETURN pg_catalog.format({params}); END $f$"
            )
        await planter.close()
        call(server, teams[shop], UPDATE, {"id": first["id"], "p": {"connection_limit": 4}})
        await asyncio.sleep(0.5)
        wait_active(server, shop)
        admin = await asyncpg.connect(target)
        try:
            row = await admin.fetchrow("SELECT rolsuper, rolconnlimit FROM pg_roles WHERE rolname = $1", role)
            return row["rolsuper"], row["rolconnlimit"]
        finally:
            await admin.execute(f'DROP OWNED BY "{role}"')
            await admin.close()

    try:
        assert asyncio.run(plant_update_and_check()) == (False, 4)
    finally:

        async def drop() -> None:
            admin = await asyncpg.connect(target)
            for row in (first, second):
                name = row["outputs"]["database_name"]
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
            await admin.close()

        asyncio.run(drop())
