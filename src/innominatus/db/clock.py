"""Lease times by the database's clock on PostgreSQL, so replicas whose machines' clocks differ agree on
when a lease ran out. The embedded SQLite database serves one process: there its clock is the process's."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Interval, func, literal

from innominatus.db.models import UTCDateTime, utcnow


def now(dialect: str) -> ColumnElement[datetime] | datetime:
    """PostgreSQL: an expression; SQLite: a plain value (an ORM insert with a SQL expression among its
    values builds and compiles a statement of its own each time)."""
    if dialect == "postgresql":
        return func.statement_timestamp(type_=UTCDateTime())
    return utcnow()


def later(dialect: str, delta: timedelta) -> ColumnElement[datetime] | datetime:
    if dialect == "postgresql":
        return _later_on_postgresql(delta)
    return utcnow() + delta


@functools.lru_cache(maxsize=16)
def _later_on_postgresql(delta: timedelta) -> ColumnElement[datetime]:
    # The same object for the same lease: a statement that carries it is built once (db/writes.py).
    return func.statement_timestamp(type_=UTCDateTime()) + literal(delta, Interval())
