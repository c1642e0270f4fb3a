"""The `postgres` step type against the real PostgreSQL server: a database that really connects."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from innominatus import operations, specs
from innominatus.db import models
from innominatus.providers import Catalog, CatalogError, load_catalog
from innominatus.score import SpecError
from innominatus.store import Store
from innominatus.workflows.postgres import object_name
from tests.conftest import PG_ADMIN_URL, PROVIDERS, create_pg_database
from tests.integration.helpers import resources, running_engine, steps_of
from tests.integration.test_operations import wait_states

pytestmark = pytest.mark.postgres


@pytest.fixture
def catalog(tmp_path: Path, pg_server: str) -> Catalog:  # pg_server: skips/fails like every PostgreSQL test
    config = tmp_path / "admin-config.yaml"
    config.write_text(
        "postgres:\n  targets:\n    local:\n      adminUrlEnv: INNOMINATUS_TEST_DIRECT_ADMIN_URL\n"
        f"      defaultAdminUrl: {PG_ADMIN_URL}\n"
        "    nowhere:\n      adminUrlEnv: INNOMINATUS_TEST_NOWHERE\n"
        "      defaultAdminUrl: postgresql://postgres@127.0.0.1:1/postgres\n"
    )
    return load_catalog(PROVIDERS, config)


@pytest.fixture
async def admin() -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        yield conn
    finally:
        await conn.close()


def spec(app: str, props: str = "", klass: str = "") -> str:
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\ncontainers:\n  main:\n    image: a\n"
        f"resources:\n  db:\n    type: postgres\n{klass}" + (f"    properties:\n{props}" if props else "")
    )


def app_name() -> str:
    return f"direct-{uuid.uuid4().hex[:8]}"


async def update(store: Store, catalog: Catalog, resource_id: str, props: dict) -> None:
    async with store.transaction() as session:
        resource = await session.get(models.Resource, resource_id)
        app = await session.get(models.Application, resource.application_id)
        await operations.update_properties(session, catalog, app, resource, props)


async def test_provision_connect_update_delete(
    store: Store, catalog: Catalog, admin: asyncpg.Connection
) -> None:
    app = app_name()
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec(app))
        db = (await wait_states(store, app, {"db": "ACTIVE"}))["db"]
        out = db.outputs
        assert set(out) == {"host", "port", "username", "password", "database_name", "connection_string"}
        assert all(isinstance(v, str) for v in out.values())
        assert out["username"] == out["database_name"] == object_name(app, "db")
        conn = await asyncpg.connect(out["connection_string"])
        try:
            assert await conn.fetchval("SELECT 1") == 1
            assert await conn.fetchval("SELECT current_user") == out["username"]
            assert await conn.fetchval("SELECT current_database()") == out["database_name"]
        finally:
            await conn.close()

        await update(store, catalog, db.id, {"connection_limit": 3})
        db = (await wait_states(store, app, {"db": "ACTIVE"}))["db"]
        assert (
            await admin.fetchval("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1", out["username"]) == 3
        )
        assert db.outputs["password"] == out["password"]  # update keeps the credentials

        async with store.transaction() as session:
            row = await operations.lock_application(session, app)
            await operations.delete_application(session, catalog, row)
        await wait_states(store, app, {"db": "DELETED"})
    with pytest.raises(asyncpg.PostgresError):
        await asyncpg.connect(out["connection_string"])
    assert (
        await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", out["database_name"]) == 0
    )
    assert await admin.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", out["username"]) == 0


async def test_rerun_converges_on_the_same_role(
    store: Store, catalog: Catalog, admin: asyncpg.Connection
) -> None:
    app = app_name()
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec(app))
        db = (await wait_states(store, app, {"db": "ACTIVE"}))["db"]
        # A second create run (as after a crash mid-step) adopts its own role and keeps the stored password.
        async with store.transaction() as session:
            row = await session.get(models.Resource, db.id)
            row.state = "FAILED"  # as a crashed-and-failed run would leave it
        await specs.submit(store, catalog, spec(app, "      note: again\n"))
        again = (await wait_states(store, app, {"db": "ACTIVE"}))["db"]
    assert again.outputs["password"] == db.outputs["password"]
    assert (
        await admin.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", db.outputs["username"]) == 1
    )
    conn = await asyncpg.connect(again.outputs["connection_string"])
    await conn.close()
    await _drop(admin, db.outputs["username"])


async def test_existing_database_of_someone_else_is_never_adopted(
    store: Store, catalog: Catalog, admin: asyncpg.Connection
) -> None:
    app = app_name()
    name = object_name(app, "db")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        async with running_engine(store, catalog):
            await specs.submit(store, catalog, spec(app))
            db = (await wait_states(store, app, {"db": "FAILED"}))["db"]
        assert f"database {name} already exists and was not created for this resource" in db.error_message
        assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 1
    finally:
        await _drop(admin, name)


async def test_spec_properties_never_become_sql(
    store: Store, catalog: Catalog, admin: asyncpg.Connection
) -> None:
    app = app_name()
    props = '      db_name: "x\\"; DROP ROLE postgres; --"\n      connection_limit: 5\n'
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec(app, props))
        db = (await wait_states(store, app, {"db": "ACTIVE"}))["db"]
    assert await admin.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = 'postgres'") == 1
    assert db.outputs["database_name"] == object_name(app, "db")
    await _drop(admin, db.outputs["username"])


async def test_unreachable_target_fails_with_address_after_retries(
    store: Store, catalog: Catalog, tmp_path: Path
) -> None:
    wf = (PROVIDERS / "database-team" / "workflows" / "provision-postgres-direct.yaml").read_text()
    provider = tmp_path / "p" / "down"
    (provider / "workflows").mkdir(parents=True)
    (provider / "workflows" / "provision.yaml").write_text(
        wf.replace("target: local", "target: nowhere").replace("retryDelay: 2", "retryDelay: 0.1")
    )
    (provider / "provider.yaml").write_text(
        "apiVersion: v1\nkind: Provider\nmetadata: {name: down, version: '1'}\n"
        "capabilities:\n  resourceTypes: [pg-down]\n"
        "workflows:\n  - {name: provision-postgres-direct, file: ./workflows/provision.yaml}\n"
    )
    down = load_catalog(tmp_path / "p", catalog.platform.path)
    app = app_name()
    async with running_engine(store, down):
        await specs.submit(store, down, spec(app).replace("type: postgres", "type: pg-down"))
        db = (await wait_states(store, app, {"db": "FAILED"}))["db"]
    assert "cannot connect to postgres target 'nowhere' at 127.0.0.1:1" in db.error_message
    [step] = await steps_of(store, db.workflow_execution_id)
    assert step.attempts == 3  # retries: 2


def test_unknown_target_fails_at_load(tmp_path: Path) -> None:
    config = tmp_path / "admin-config.yaml"
    config.write_text("postgres:\n  targets:\n    other:\n      adminUrlEnv: X\n")
    with pytest.raises(
        CatalogError, match=r"target: unknown postgres target 'local' \(admin-config targets: other\)"
    ):
        load_catalog(PROVIDERS, config)


async def test_unknown_class_lists_the_classes(store: Store, catalog: Catalog) -> None:
    with pytest.raises(SpecError) as err:
        await specs.submit(store, catalog, spec(app_name(), klass="    class: gold\n"))
    [problem] = err.value.problems
    assert problem.path == "resources.db.class"
    assert "unknown class 'gold'" in problem.message and "classes offered: direct" in problem.message


async def test_class_on_a_single_workflow_type_is_ignored(store: Store, catalog: Catalog) -> None:
    mock = spec(app_name(), "      db_name: d\n", klass="    class: sensitive\n").replace(
        "type: postgres", "type: postgres-mock"
    )
    result = await specs.submit(store, catalog, mock)
    assert [r.resource_class for r in await resources(store, result.application.name)] == ["sensitive"]


async def _drop(admin: asyncpg.Connection, name: str) -> None:
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'DROP ROLE IF EXISTS "{name}"')


async def test_a_function_planted_in_a_writable_schema_never_runs_as_the_admin(
    store: Store, tmp_path: Path, pg_server: str, admin: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CVE-2018-1058's trick: an app's role puts `public.format(text, text)` on the target database,
    where `public` is writable by everyone; `format(text, variadic any)` in pg_catalog would lose to it."""
    target_url = await create_pg_database(pg_server)
    setup = await asyncpg.connect(target_url)
    await setup.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    await setup.close()
    config = tmp_path / "admin-config.yaml"
    config.write_text(
        "postgres:\n  targets:\n    local:\n      adminUrlEnv: INNOMINATUS_TEST_HIJACK_ADMIN_URL\n"
        f"      defaultAdminUrl: {target_url}\n"
    )
    catalog = load_catalog(PROVIDERS, config)
    statements: list[str] = []
    real_connect = asyncpg.connect

    async def observed_connect(*args: object, **kwargs: object) -> asyncpg.Connection:
        # Watch what the step sends (the driver's own query logger), to check no password is in it.
        conn = await real_connect(*args, **kwargs)
        conn.add_query_logger(lambda record: statements.append(record.query))
        return conn

    monkeypatch.setattr(asyncpg, "connect", observed_connect)
    app = app_name()
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec(app))
        db = (await wait_states(store, app, {"db": "ACTIVE"}))["db"]
        role, password = db.outputs["username"], db.outputs["password"]
        planter = await real_connect(
            target_url.rsplit("/", 1)[0].replace("postgres@", f"{role}@") + "/" + target_url.rsplit("/", 1)[1]
        )
        try:
            for args in ("text, text", "text, text, text", "text, text, text, text"):
                params = ", ".join(f"${i + 1}" for i in range(args.count("text")))
                await planter.execute(
                    f"CREATE FUNCTION public.format({args}) RETURNS text LANGUAGE plpgsql AS $f$ BEGIN "
                    f"EXECUTE 'ALTER ROLE {role} SUPERUSER'; RETURN pg_catalog.format({params}); END $f$"
                )
        finally:
            await planter.close()
        await update(store, catalog, db.id, {"connection_limit": 4})
        await wait_states(store, app, {"db": "ACTIVE"})
    try:
        row = await admin.fetchrow("SELECT rolsuper, rolconnlimit FROM pg_roles WHERE rolname = $1", role)
        assert (row["rolsuper"], row["rolconnlimit"]) == (False, 4)
        assert statements, "the step's statements were not observed"
        assert not [s for s in statements if password in s], "the password was sent as SQL text"
        conn = await real_connect(
            db.outputs["connection_string"].rsplit("/", 1)[0] + "/" + target_url.rsplit("/", 1)[1]
        )
        await conn.close()  # the verifier set the very password the outputs carry
    finally:
        cleanup = await real_connect(target_url)
        await cleanup.execute(f'DROP OWNED BY "{role}"')  # the planted functions
        await cleanup.close()
        await _drop(admin, role)


async def test_pairs_that_read_alike_get_different_databases(
    store: Store, catalog: Catalog, admin: asyncpg.Connection
) -> None:
    suffix = uuid.uuid4().hex[:6]
    first, second = f"shop{suffix}", f"shop{suffix}-api"
    shop = spec(first).replace("  db:\n", "  api-db:\n")
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, shop)
        await specs.submit(store, catalog, spec(second))
        a = (await wait_states(store, first, {"api-db": "ACTIVE"}))["api-db"]
        b = (await wait_states(store, second, {"db": "ACTIVE"}))["db"]
    names = {a.outputs["database_name"], b.outputs["database_name"]}
    try:
        assert len(names) == 2, names
        for name in names:
            assert len(name.encode()) <= 63 and name.replace("_", "").isalnum() and name == name.lower()
            assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 1
    finally:
        for name in names:
            await _drop(admin, name)
