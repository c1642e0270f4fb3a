"""Shared fixtures: real databases (SQLite file and PostgreSQL), stores, catalogs, provider folders."""

from __future__ import annotations

import asyncio
import os
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from innominatus.db import database
from innominatus.events import EventHub
from innominatus.providers import Catalog, load_catalog
from innominatus.store import Store

REPO = Path(__file__).resolve().parents[1]
PROVIDERS = REPO / "providers"
FIXTURES = REPO / "tests" / "e2e" / "fixtures"
PG_ADMIN_URL = os.environ.get(
    "INNOMINATUS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_PG = os.environ.get("INNOMINATUS_REQUIRE_POSTGRES") == "1"
_EXTRA_DATABASES: list[str] = []  # made by create_pg_database, dropped with the session's database


def _pg_available() -> str | None:
    async def probe() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A PostgreSQL database made for this test session; dropped at the end."""
    problem = _pg_available()
    if problem is not None:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL required (INNOMINATUS_REQUIRE_POSTGRES=1) but not reachable: {problem}")
        pytest.skip(f"PostgreSQL not reachable: {problem}")
    name = f"innominatus_test_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        for db in [name, *_EXTRA_DATABASES]:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


async def create_pg_database(pg_server: str) -> str:
    """A new empty database on the server (for tests that need more than a truncated one)."""
    name = f"innominatus_e2e_{uuid.uuid4().hex[:10]}"
    _EXTRA_DATABASES.append(name)
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return pg_server.rsplit("/", 1)[0] + f"/{name}"


def fresh_pg_database(pg_server: str) -> str:
    return asyncio.run(create_pg_database(pg_server))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'innominatus.db'}"
    pg = request.getfixturevalue("pg_server")
    return pg.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    engine = database.create_engine(db_url)
    await database.upgrade(engine)
    if engine.dialect.name == "postgresql":
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                "TRUNCATE events, workflow_steps, workflow_executions, resources, "
                "application_revisions, applications RESTART IDENTITY CASCADE"
            )
    s = Store(engine, EventHub())
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog(PROVIDERS, None)


ProviderFactory = Callable[..., Path]


def write_provider(
    base: Path,
    workflows: dict[str, str],
    *,
    name: str = "test-team",
    types: dict[str, dict[str, str]] | None = None,
    manifest: str | None = None,
) -> Path:
    """Write provider folder `base/name` with the given workflows (file name → YAML); returns `base`.
    `types` maps a resource type to {operation: workflow} (default: `test-db` creates with the first)."""
    folder = base / name
    (folder / "workflows").mkdir(parents=True, exist_ok=True)
    for wf_name, body in workflows.items():
        (folder / "workflows" / f"{wf_name}.yaml").write_text(textwrap.dedent(body))
    if manifest is None:
        types = types or {"test-db": {"create": next(iter(workflows))}}
        lines = [
            "apiVersion: v1",
            "kind: Provider",
            f"metadata:\n  name: {name}\n  version: 1.0.0\n  category: test",
            "capabilities:\n  resourceTypeCapabilities:",
        ]
        for rtype, ops in types.items():
            lines.append(f"    - type: {rtype}\n      operations:")
            for op, wf in ops.items():
                lines.append(f"        {op}:\n          workflow: {wf}")
        lines.append("workflows:")
        op_of = {wf: op for ops in types.values() for op, wf in ops.items()}
        for wf_name in workflows:
            lines.append(
                f"  - name: {wf_name}\n    file: ./workflows/{wf_name}.yaml\n"
                f"    operation: {op_of.get(wf_name, 'create')}"
            )
        manifest = "\n".join(lines) + "\n"
    (folder / "provider.yaml").write_text(textwrap.dedent(manifest))
    return base


@pytest.fixture
def make_provider(tmp_path: Path) -> ProviderFactory:
    """`write_provider` under this test's tmp_path (or `root`); returns the providers root."""

    def make(workflows: dict[str, str], *, root: Path | None = None, **options: Any) -> Path:
        return write_provider(root or tmp_path / "providers", workflows, **options)

    return make


def workflow_yaml(name: str, steps: str, *, parameters: str = "", outputs: str = "") -> str:
    """A workflow file from indented YAML fragments (each fragment at column 0)."""
    doc = f"apiVersion: innominatus.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: {name}\n"
    if parameters:
        doc += "parameters:\n" + textwrap.indent(textwrap.dedent(parameters), "  ")
    doc += "steps:\n" + textwrap.indent(textwrap.dedent(steps), "  ")
    if outputs:
        doc += "outputs:\n" + textwrap.indent(textwrap.dedent(outputs), "  ")
    return doc
