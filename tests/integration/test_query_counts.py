"""Nested list fields are loaded per batch of parents (DataLoaders), not per row: a deep query over an
application costs the same number of SQL statements whether it has 5 resources or 20."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from innominatus import specs
from innominatus.api.context import Context, Services
from innominatus.api.execution import Execution
from innominatus.api.schema import schema
from innominatus.auth import DEV_ADMIN, Authenticator
from innominatus.providers import Catalog, load_catalog
from innominatus.ratelimit import RateLimiter
from innominatus.store import Store
from tests.conftest import ProviderFactory, workflow_yaml
from tests.integration.helpers import running_engine, settle

DEEP = """
query($app: String!) {
  application(name: $app) {
    name workload pendingResources
    resources {
      name state outputs
      dependsOn { name requiredBy { name } }
      requiredBy { name dependsOn { name } }
      transitions { toState }
      workflowExecution { status steps { name status logs } resource { name } retryOf { id } }
    }
  }
  workflows(application: $app) { workflowName steps { name } resource { name dependsOn { name } } }
}
"""


def spec(app: str, dependents: int) -> str:
    lines = [
        "apiVersion: score.dev/v1b1",
        f"metadata:\n  name: {app}",
        "containers:\n  main:\n    image: nginx",
        "resources:\n  hub:\n    type: test-db",
    ]
    for i in range(dependents):
        lines.append(f"  r{i}:\n    type: test-db\n    params:\n      host: ${{resources.hub.host}}")
    return "\n".join(lines) + "\n"


@contextmanager
def counting(store: Store, begins: list[str] | None = None) -> Iterator[list[str]]:
    """The statements the store's database runs meanwhile (BEGIN/COMMIT/ROLLBACK aside; the BEGINs go
    to `begins` if given). Some go past SQLAlchemy (db/direct.py, db/writes.py): on SQLite the writer's
    are taken from the sqlite3 connection itself; on PostgreSQL asyncpg's query logger adds those
    (SQLAlchemy's own run as prepared statements, which it does not log)."""
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        verb = statement.split(None, 1)[0].upper().rstrip(";")
        if verb not in ("BEGIN", "COMMIT", "ROLLBACK"):
            statements.append(statement)
        elif verb == "BEGIN" and begins is not None:
            begins.append(statement)

    def trace(statement: str) -> None:
        count(None, None, statement)

    def traced(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.driver_connection.sqlite.set_trace_callback(trace)

    def untraced(dbapi_connection: Any, *_: Any) -> None:
        if dbapi_connection is not None:
            dbapi_connection.driver_connection.sqlite.set_trace_callback(None)

    def logged(record: Any) -> None:
        count(None, None, record.query)

    def logging(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(logged)

    def unlogged(dbapi_connection: Any, *_: Any) -> None:
        if dbapi_connection is not None:
            dbapi_connection.driver_connection.remove_query_logger(logged)

    writer = store.engine.sync_engine
    hooks: list[tuple[Any, str, Any]] = []
    for engine in store.engines:
        if engine is writer and store.dialect == "sqlite":
            hooks += [(engine, "checkout", traced), (engine, "checkin", untraced)]
        else:
            hooks.append((engine, "before_cursor_execute", count))
            if store.dialect == "postgresql":
                hooks += [(engine, "checkout", logging), (engine, "checkin", unlogged)]
    for target, name, hook in hooks:
        event.listen(target, name, hook)
    try:
        yield statements
    finally:
        for target, name, hook in hooks:
            event.remove(target, name, hook)


async def deep_query(store: Store, catalog: Catalog, app: str) -> tuple[dict[str, Any], list[str]]:
    services = Services(
        store=store,
        catalog=catalog,
        authenticator=Authenticator(store),
        rate_limiter=RateLimiter(10, 1),
    )
    context = Context(services=services, principal=DEV_ADMIN)
    with counting(store) as statements:
        result = await schema.execute(DEEP, variable_values={"app": app}, context_value=context)
    assert result.errors is None, result.errors
    assert result.data is not None
    return result.data, [s.split(" FROM ")[-1][:60] for s in statements]


async def test_deep_nested_query_costs_the_same_for_5_and_20_resources(
    store: Store, make_provider: ProviderFactory
) -> None:
    wf = workflow_yaml(
        "provision-test",
        "- name: make\n  type: policy\n  config:\n    script: 'echo host=h-$RANDOM >> \"$INNOMINATUS_OUTPUT\"'\n",
        outputs="host: '{{ steps.make.outputs.host }}'\n",
    )
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    async with running_engine(store, catalog):
        for app, dependents in (("small", 4), ("large", 19)):
            await specs.submit(store, catalog, spec(app, dependents))
            await settle(store, app, count=dependents + 1)

    small, small_statements = await deep_query(store, catalog, "small")
    assert len(small["application"]["resources"]) == 5
    large, large_statements = await deep_query(store, catalog, "large")

    resources = large["application"]["resources"]
    assert len(resources) == 20
    hub = next(r for r in resources if r["name"] == "hub")
    assert sorted(r["name"] for r in hub["requiredBy"]) == sorted(f"r{i}" for i in range(19))
    others = [r for r in resources if r is not hub]
    names = [{"name": r["name"]} for r in hub["requiredBy"]]
    assert [r["dependsOn"] for r in others] == [[{"name": "hub", "requiredBy": names}]] * 19
    assert all(r["workflowExecution"]["steps"][0]["status"] == "SUCCEEDED" for r in resources)
    assert len(large["workflows"]) == 20
    assert large["application"]["pendingResources"] == []
    # The same statements whatever the number of rows: one per kind of nested field, not one per row.
    assert len(large_statements) == len(small_statements)
    assert len(large_statements) <= 10, large_statements


async def test_an_operations_executor_is_freed_as_soon_as_it_ends(
    store: Store, make_provider: ProviderFactory
) -> None:
    """No reference cycle keeps an operation's executor (and its context, variables and results) alive
    until the cycle collector's next pass: under load those passes walked the whole heap once a second."""
    wf = workflow_yaml("provision-test", "- name: noop\n  type: policy\n  config:\n    script: 'true'\n")
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    await specs.submit(store, catalog, spec("freed", 1))
    await deep_query(store, catalog, "freed")  # warm: caches filled
    gc.collect()
    gc.disable()
    try:
        data, _ = await deep_query(store, catalog, "freed")
        left = [o for o in gc.get_objects() if isinstance(o, Execution)]
    finally:
        gc.enable()
    assert len(data["application"]["resources"]) == 2
    assert left == []
