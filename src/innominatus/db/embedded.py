"""The embedded database serves one server process. A second `innominatus serve` on the same SQLite
file would number events and read lists as if it were alone (that is what makes SQLite fast here), so
it is turned away at start, while the first keeps working. Replicas share a PostgreSQL database."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from sqlalchemy import make_url


class InUse(RuntimeError):
    pass


def hold(database_url: str) -> IO[bytes] | None:
    """Lock `<file>.serve-lock` beside a SQLite file for as long as the returned handle stays open (the
    process's life); None for PostgreSQL or an in-memory database. Raises InUse, saying what to do."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database).resolve()
    handle = open(path.with_name(path.name + ".serve-lock"), "ab")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise InUse(
            f"the embedded database {path} is served by another innominatus process, and the embedded "
            "database (SQLite) serves one process only. To run several replicas, point every one at one "
            "PostgreSQL database: INNOMINATUS_DATABASE_URL=postgresql+asyncpg://user@host:5432/dbname"
        ) from None
    os.set_inheritable(handle.fileno(), False)
    return handle
