"""Upgrading a database that already holds data keeps every row (SQLite copies tables to alter them)."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect, text

from innominatus.db import database
from tests.conftest import create_pg_database


async def test_upgrade_from_first_revision_keeps_history(db_url: str, request: pytest.FixtureRequest) -> None:
    if db_url.startswith("postgresql"):
        db_url = await create_pg_database(
            request.getfixturevalue("pg_server")
        )  # an empty one, at no revision
    engine = database.create_engine(db_url)
    try:
        await database.upgrade(engine, "0001")
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO applications (id, name, revision, spec, created_at, updated_at) "
                    "VALUES ('a1', 'app', 1, '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO resources (id, application_id, application_name, name, type, state, properties, "
                    "outputs, created_at, updated_at) VALUES ('r1', 'a1', 'app', 'db', 't', 'ACTIVE', '{}', '{}', "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO resource_transitions (resource_id, to_state, at) VALUES ('r1', 'REQUESTED', "
                    "CURRENT_TIMESTAMP)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO workflow_executions (id, resource_id, application_name, workflow_name, operation, "
                    "provider, status, inputs, started_at) VALUES ('e1', 'r1', 'app', 'w', 'create', 'p', "
                    "'SUCCEEDED', '{}', CURRENT_TIMESTAMP)"
                )
            )
        await database.upgrade(engine)
        async with engine.connect() as conn:
            counts = [
                (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar()  # noqa: S608 - fixed names
                for table in ("applications", "resources", "workflow_executions")
            ]
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
            depends = (await conn.execute(text("SELECT depends_on FROM resources"))).scalar()
        assert counts == [1, 1, 1]
        assert "resource_transitions" not in tables  # its rows were the events' twins (0005)
        assert depends in ("[]", [])
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_the_numbering_function_goes_back_and_forth(request: pytest.FixtureRequest) -> None:
    """Downgrades put each earlier numbering function back (0008 → 0006's → 0004's), and upgrading again
    gives the one that tells which events released parked resources."""
    engine = database.create_engine(await create_pg_database(request.getfixturevalue("pg_server")))
    returns = text(
        "SELECT pg_get_function_result(oid) FROM pg_proc WHERE proname = 'innominatus_number_events'"
    )
    arguments = text(
        "SELECT pg_get_function_identity_arguments(oid) FROM pg_proc WHERE proname = 'innominatus_number_events'"
    )
    try:
        await database.upgrade(engine)
        for revision, expected in (
            ("0007", ("SETOF events", "batch integer, origin text")),
            ("0005", ("SETOF events", "batch integer")),
        ):
            async with engine.begin() as conn:
                await conn.run_sync(lambda c, r=revision: command.downgrade(database._alembic_config(c), r))
            async with engine.connect() as conn:
                assert ((await conn.scalar(returns)), (await conn.scalar(arguments))) == expected
        await database.upgrade(engine)
        async with engine.connect() as conn:
            assert (await conn.scalar(returns)) == "TABLE(event events, released boolean)"
            assert (await conn.scalar(arguments)) == "batch integer, origin text"
    finally:
        await engine.dispose()
