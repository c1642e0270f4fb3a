"""A transaction's writes without the ORM's flush: on PostgreSQL one statement (each INSERT and UPDATE a
WITH of its own), on SQLite each row straight into the sqlite3 connection.

Why: a submission adds seven objects (application, revision, resource, two events, execution, step).
On PostgreSQL the ORM wrote them as six INSERTs with bookkeeping around each: over 200 submissions (and
their claims) in one process, 6.4-6.9 ms of CPU and 9.0-9.5 ms a submission before, 2.9-5.4 ms and
4.2-9.0 ms with this; a run's finish (its event and its resource's state) went from two round trips to
one. On SQLite the statements themselves cost about 0.05 ms each, the flush's bookkeeping around them
0.5 ms: its seven INSERTs took 4.4-4.7 ms of a submission's 12 ms on the benchmark machine, the rows
written here 1.1-1.3 ms.

How: `write_pending` takes the session's pending objects (those no query has flushed yet) with the
columns' Python defaults filled in as the ORM would, and the changed columns of its persistent objects;
it writes them, reads back the keys the database generated (and checks every update found its row, as
the ORM does), and leaves the objects as the flush does: persistent, unchanged, in the identity map and
known to the transaction. What it cannot write as the ORM would (a column whose default is SQL or only
the server's, a JSON column left unset, a changed key or SQL expression, a version counter or
`onupdate`) stays with the ORM, and with it every new row of the transaction (a row written here must
not refer to one the ORM writes later); so does, on PostgreSQL, a transaction of more than MAX_ROWS rows
(see there).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

from sqlalchemy import (
    JSON,
    ClauseElement,
    Column,
    Table,
    bindparam,
    cast,
    insert,
    inspect,
    literal,
    select,
    update,
)
from sqlalchemy import String as SqlString
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper, object_mapper
from sqlalchemy.orm.exc import StaleDataError

from innominatus.db.direct import Compiled, began, compiled, driver_rows, sqlite_connection
from innominatus.db.models import Base

# The columns that tell apart the rows one statement inserts into a table whose key the database makes:
# keys come back in insert order, and these check that they are matched to the right objects.
_SENTINELS: dict[str, tuple[str, ...]] = {
    "events": ("resource_id", "from_state", "to_state"),
    "workflow_steps": ("execution_id", "position"),
    "application_revisions": ("application_id", "revision"),
}
_ORDER = {table: index for index, table in enumerate(Base.metadata.sorted_tables)}
# The hot transactions are small: a submission of a resource writes 7 rows, a run's finish 2. A statement
# is compiled once per shape (tables and row counts), which for dozens of rows costs tens of ms in the
# loop: claim passes of varying batch sizes made a new shape each time and stalled the server (two
# replicas' subscribers fell behind). Larger transactions are the ORM's, whose statements do not depend
# on the row count.
MAX_ROWS = 12


class _New:
    """A pending object and the row it becomes."""

    __slots__ = ("obj", "row")

    def __init__(self, obj: Any, row: dict[str, Any]) -> None:
        self.obj, self.row = obj, row


async def write_pending(session: AsyncSession, *, last: bool = False) -> None:
    """Write the session's pending objects and changed columns now (module docstring). `last`: the
    transaction commits right after, with no statement of its own in between."""
    dialect = session.get_bind().dialect
    if dialect.name == "sqlite":
        await _write_inline(session)
        return
    if dialect.name != "postgresql" or len(session.new) > MAX_ROWS:
        return
    by_table: dict[Table, list[_New]] = {}
    for table, new in _pending(session)[0]:
        by_table.setdefault(table, []).append(new)
    for table in [t for t, news in by_table.items() if not _distinct(t, news)]:
        del by_table[table]  # rows it could not tell apart: the ORM writes them
    changes = [change for change in map(_change, list(session.dirty)) if change is not None]
    rows = sum(len(news) for news in by_table.values()) + len(changes)
    if not rows or rows > MAX_ROWS:
        return
    groups = sorted(by_table.items(), key=lambda item: _ORDER[item[0]])
    compiled = _plan(groups, changes, dialect)
    values = {
        f"p{t}_{r}_{key}": value
        for t, (_, news) in enumerate(groups)
        for r, new in enumerate(news)
        for key, value in new.row.items()
    }
    for u, change in enumerate(changes):
        values[f"u{u}__key"] = change.key
        values.update({f"u{u}_{key}": value for key, value in change.values.items()})
    # The last of the transaction's statements, all of its writes, and nothing read before them: the
    # statement is the transaction (no BEGIN or COMMIT round trip).
    alone = (
        last
        and rows == len(session.new) + len(session.dirty)
        and not session.deleted
        and not await began(session)
    )
    returned = await driver_rows(session, compiled.sql, compiled.arguments(values), alone=alone)
    _assign(groups, returned)
    _check_found(changes, returned)
    _as_flushed(session, [new.obj for _, news in groups for new in news] + [c.obj for c in changes])


async def _write_inline(session: AsyncSession) -> None:
    """SQLite: each row straight into the sqlite3 connection, table by table in the ORM's order (a
    table's updates, then its inserts; SQLite checks foreign keys statement by statement), a generated
    key read from the cursor."""
    pending, complete = _pending(session)
    if not complete or any(isinstance(v, ClauseElement) for _, new in pending for v in new.row.values()):
        return
    news = [(new.obj, table, new.row) for table, new in pending]
    changes = [change for change in map(_change, list(session.dirty)) if change is not None]
    if not news and not changes:
        return
    sqlite = await sqlite_connection(session)
    if sqlite is None:
        return
    dialect = session.get_bind().dialect
    news.sort(key=lambda new: inspect(new[0]).insert_order)  # a table's rows in the order they were added
    cursor = sqlite.cursor()
    try:
        for table in sorted({new[1] for new in news} | {c.table for c in changes}, key=_ORDER.__getitem__):
            for change in (c for c in changes if c.table is table):
                compiled = _inline_update(change, dialect)
                cursor.execute(compiled.sql, compiled.arguments({**change.values, "_key": change.key}))
                if cursor.rowcount != 1:
                    raise StaleDataError(f"{table.name} {change.key}: the row to update is gone")
            generated = _generated(table)
            for obj, _, row in (new for new in news if new[1] is table):
                compiled = _inline_insert(table, row, dialect)
                cursor.execute(compiled.sql, compiled.arguments(row))
                if generated is not None and generated.key not in row:
                    setattr(obj, generated.key, cursor.lastrowid)
    finally:
        cursor.close()
    _as_flushed(session, [obj for obj, _, _ in news] + [change.obj for change in changes])


def _pending(session: AsyncSession) -> tuple[list[tuple[Table, _New]], bool]:
    """The session's pending objects as the rows they become, and whether every one could be."""
    found: list[tuple[Table, _New]] = []
    for obj in list(session.new):
        mapper = object_mapper(obj)
        table = mapper.local_table
        row = _row(obj, mapper)
        if row is None or not isinstance(table, Table) or table not in _ORDER:
            return [], False
        found.append((table, _New(obj, row)))
    return found, True


def _inline_insert(table: Table, row: dict[str, Any], dialect: Any) -> Compiled:
    def build() -> Any:
        return insert(table).values({key: bindparam(key, type_=table.c[key].type) for key in row})

    return compiled(("insert", table.name, tuple(row)), build, dialect)


def _inline_update(change: _Changed, dialect: Any) -> Compiled:
    table = change.table

    def build() -> Any:
        (key,) = [column for column in table.c if column.primary_key]
        return (
            update(table)
            .where(key == bindparam("_key", type_=key.type))
            .values({name: bindparam(name, type_=table.c[name].type) for name in change.values})
        )

    return compiled(("update", table.name, tuple(change.values)), build, dialect)


class _Changed:
    """A persistent object's changed columns, and the key of its row."""

    __slots__ = ("key", "obj", "table", "values")

    def __init__(self, obj: Any, table: Table, key: Any, values: dict[str, Any]) -> None:
        self.obj, self.table, self.key, self.values = obj, table, key, values


def _change(obj: Any) -> _Changed | None:
    """What the ORM's flush would UPDATE for `obj`, or None: nothing, or more than a plain UPDATE by a
    one-column key (a key or SQL expression changed, a version counter, a column with `onupdate`)."""
    state = inspect(obj)
    mapper = state.mapper
    table = mapper.local_table
    if not state.persistent or not isinstance(table, Table) or table not in _ORDER:
        return None
    if mapper.version_id_col is not None or len(mapper.primary_key) != 1 or state.identity is None:
        return None
    values: dict[str, Any] = {}
    for prop in mapper.column_attrs:
        added = state.attrs[prop.key].history.added
        if not added:
            continue
        column = prop.columns[0]
        if column.primary_key or isinstance(added[0], ClauseElement):
            return None
        values[column.key] = added[0]
    if not values or any(column.onupdate is not None for column in table.c):
        return None
    return _Changed(obj, table, state.identity[0], values)


def _check_found(changes: list[_Changed], returned: Sequence[Any]) -> None:
    """Every UPDATE found its row, as the ORM checks."""
    found = {row[0] for row in returned if row[0] >= _UPDATES}
    for u, change in enumerate(changes):
        if _UPDATES + u not in found:
            raise StaleDataError(f"{change.table.name} {change.key}: the row to update is gone")


def _as_flushed(session: AsyncSession, objects: list[Any]) -> None:
    """The objects as the ORM's flush leaves what it wrote: persistent, unchanged (so no later flush
    looks at them again), in the identity map, and known to the transaction (a rollback expunges the
    new ones). This is the flush's own last step."""
    if objects:
        session.sync_session._register_persistent({inspect(obj) for obj in objects})


def _row(obj: Any, mapper: Mapper[Any]) -> dict[str, Any] | None:
    """The column values the ORM would insert for `obj`, its defaults filled in (on the object too), or
    None when that takes the database or a SQL NULL in a JSON column (the ORM writes those)."""
    plan = _plans.get(mapper, _UNPLANNED)
    if plan is _UNPLANNED:
        plan = _plans[mapper] = _plan_row(mapper)
    if plan is None:
        return None
    state = obj.__dict__
    row: dict[str, Any] = {}
    for key, column_key, generated, default, stores_none in plan:
        value = state.get(key)
        # As the ORM: a None it was given counts as a value only for types that store one (JSON null).
        if value is None and not (stores_none and key in state):
            if generated:
                continue  # the database numbers it; read back after the insert
            if default is _BY_DATABASE:
                return None
            value = default(None) if callable(default) else default
            setattr(obj, key, value)  # loaded, as after a flush: never expired
        row[column_key] = value
    return row


_BY_DATABASE = object()  # a default only SQL or the server provides, or an unset JSON column
_UNPLANNED = object()
_plans: dict[Mapper[Any], list[tuple[str, str, bool, Any, bool]] | None] = {}


def _plan_row(mapper: Mapper[Any]) -> list[tuple[str, str, bool, Any, bool]] | None:
    """Per column of a mapper, read once: (attribute, column, generated by the database, the default
    (a callable, a scalar or _BY_DATABASE), whether None is stored as a value); None when a column is
    not plainly the table's own."""
    table = mapper.local_table
    generated = _generated(table)  # type: ignore[arg-type]
    plan = []
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        if not isinstance(column, Column) or column.table is not table:
            return None
        default: Any = None
        if column.default is not None and column.default.is_callable:
            default = column.default.arg  # type: ignore[attr-defined]
        elif column.default is not None and column.default.is_scalar:
            default = column.default.arg  # type: ignore[attr-defined]
            if callable(default):
                return None
        elif column.default is not None or column.server_default is not None or _is_json(column):
            default = _BY_DATABASE
        plan.append(
            (prop.key, column.key, column is generated, default, bool(column.type.should_evaluate_none))
        )
    return plan


def _generated(table: Table) -> Column[Any] | None:
    return getattr(table, "autoincrement_column", None)


def _distinct(table: Table, news: list[_New]) -> bool:
    """Whether the generated keys of `news` can be matched to them (always, without generated keys)."""
    if _generated(table) is None or (len(news) == 1 and table.name not in _SENTINELS):
        return True
    names = _SENTINELS.get(table.name)
    if names is None:
        return False
    keys = {tuple(new.row[name] for name in names) for new in news}
    return len(keys) == len(news)


def _is_json(column: Column[Any]) -> bool:
    variants = getattr(column.type, "_variant_mapping", {}).values()
    return isinstance(column.type, JSON) or any(isinstance(v, JSON) for v in variants)


def _marker(value: Any) -> Any:
    """How a value enters the statement: bound, or an SQL expression (a lease's end by the database's
    clock; db/clock.py hands out the same object each time, so the statement is built once)."""
    return id(value) if isinstance(value, ClauseElement) else "bound"


def _plan(groups: Sequence[tuple[Table, list[_New]]], changes: list[_Changed], dialect: Any) -> Compiled:
    """The statement for rows and changes of this shape, built and compiled once."""
    shape = (
        tuple(
            (table.name, tuple(tuple((k, _marker(v)) for k, v in new.row.items()) for new in news))
            for table, news in groups
        ),
        tuple((change.table.name, tuple(change.values)) for change in changes),
    )

    def build() -> Any:
        inserts = [(table, _insert(t, table, news)) for t, (table, news) in enumerate(groups)]
        return _chained(inserts, [_update(u, change) for u, change in enumerate(changes)])

    return compiled(shape, build, dialect)


def _update(u: int, change: _Changed) -> Any:
    table = change.table
    (key,) = [column for column in table.c if column.primary_key]
    return (
        update(table)
        .where(key == bindparam(f"u{u}__key", type_=key.type))
        .values({name: bindparam(f"u{u}_{name}", type_=table.c[name].type) for name in change.values})
        .returning(key)
    )


def _insert(t: int, table: Table, news: list[_New]) -> Any:
    """The INSERT of group `t`'s rows, returning the generated keys and sentinels if the table has any."""
    values = [
        {
            key: bindparam(f"p{t}_{r}_{key}", type_=table.c[key].type) if _marker(value) == "bound" else value
            for key, value in new.row.items()
        }
        for r, new in enumerate(news)
    ]
    statement = insert(table).values(values)
    generated = _generated(table)
    if generated is None:
        return statement
    return statement.returning(generated, *(table.c[name] for name in _SENTINELS.get(table.name, ())))


def _chained(inserts: list[tuple[Table, Any]], updates: list[Any]) -> Any:
    """One statement: each INSERT and UPDATE a WITH of its own, and as its rows (group, key as text,
    sentinels as text): the generated keys of every insert, and a row for every update that found its
    row (group _UPDATES + its index)."""
    reads = []
    ctes = []
    width = len(_LONGEST)
    for t, (table, statement) in enumerate(inserts):
        cte = statement.cte(f"new_{t}")
        ctes.append(cte)
        if _generated(table) is None:
            continue
        key, *sentinels = cte.c
        texts = [cast(column, SqlString) for column in sentinels]
        texts += [literal(None, SqlString)] * (width - len(texts))
        reads.append(select(literal(t), cast(key, SqlString), *texts))
    for u, statement in enumerate(updates):
        cte = statement.cte(f"changed_{u}")
        ctes.append(cte)
        (key,) = cte.c
        reads.append(select(literal(_UPDATES + u), cast(key, SqlString), *[literal(None, SqlString)] * width))
    if not reads:
        final = select(literal(0))
    elif len(reads) == 1:
        final = select(reads[0].subquery())
    else:
        final = select(reads[0].union_all(*reads[1:]).subquery())
    for cte in ctes:
        final = final.add_cte(cte)
    return final


_LONGEST = max(_SENTINELS.values(), key=len)
_UPDATES = 1_000_000  # groups from here on are updates


def _assign(groups: Sequence[tuple[Table, list[_New]]], returned: Sequence[Any]) -> None:
    """Give each group's objects their generated keys: in insert order, checked against the sentinels."""
    for t, (table, news) in enumerate(groups):
        generated = _generated(table)
        if generated is None:
            continue
        rows = sorted((row for row in returned if row[0] == t), key=lambda row: int(row[1]))
        if len(rows) != len(news):
            raise RuntimeError(f"{table.name}: {len(news)} rows inserted, {len(rows)} keys returned")
        names = _SENTINELS.get(table.name, ())
        for new, row in zip(news, rows, strict=True):
            expected = tuple(_as_text(new.row[name]) for name in names)
            if tuple(_as_text(v) for v in row[2 : 2 + len(names)]) != expected:
                raise RuntimeError(f"{table.name}: generated keys came back out of insert order")
            setattr(new.obj, generated.key, int(row[1]))


def _as_text(value: Any) -> str | None:
    """A value as the database casts it to text (str enums as their value)."""
    if value is None:
        return None
    return str(value.value) if isinstance(value, Enum) else str(value)
