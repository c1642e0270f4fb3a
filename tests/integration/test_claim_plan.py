"""A claim pass reads the claimable index, however many REQUESTED rows are parked: on SQLite (no
statistics) the plan must not walk `ix_resources_state`, which holds every parked row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.dialects import sqlite

from innominatus.db import database
from innominatus.db.models import Resource
from innominatus.engine.claims import _CLAIMABLE, ANY_CLAIMABLE


def plan(connection: sqlite3.Connection, query: object) -> str:
    sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))  # type: ignore[attr-defined]
    return " | ".join(row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}"))


async def test_claim_queries_use_the_claimable_index(tmp_path: Path) -> None:
    path = tmp_path / "plan.db"
    engine = database.create_engine(f"sqlite+aiosqlite:///{path}")
    await database.upgrade(engine)
    await engine.dispose()
    connection = sqlite3.connect(path)
    batch = select(Resource.id).where(text(_CLAIMABLE)).order_by(Resource.created_at).limit(32)
    for query in (ANY_CLAIMABLE, batch):
        shown = plan(connection, query)
        assert "ix_resources_claimable" in shown, shown
        assert "TEMP B-TREE" not in shown, shown  # the index gives the order too
    connection.close()
