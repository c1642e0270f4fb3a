"""What one resource costs the database, end to end (submit, claim, run, finish, numbering and
publication of its three events): a bounded number of statements, the same on both backends."""

from __future__ import annotations

import asyncio

from innominatus import specs
from innominatus.events import StateEvent
from innominatus.providers import load_catalog
from innominatus.store import Store
from tests.conftest import ProviderFactory, workflow_yaml
from tests.integration.helpers import running_engine, settle
from tests.integration.test_query_counts import counting

# Statements besides BEGIN/COMMIT. SQLite: 14, each inserted row counting (22–23 before claims moved into
# the submission and the duplicate transitions table went; about 60 originally). PostgreSQL: 9, counting
# the two step-event relays a lone replica leaves out (16 before a transaction's writes went out as one
# statement and the run's finish took its last step's result along). One fewer on both since an ACTIVE
# wakes a claim pass only when it released something (migration 0008). PostgreSQL 7 since a create's finish
# is one statement outside a transaction (its lock, the step's result, the run, the state and the event; it
# was three statements and BEGIN/COMMIT). PostgreSQL 6 since a first submission is its writes alone (no
# locking read of the application it creates).
PER_RESOURCE = {"sqlite": 14, "postgresql": 6}
# Transactions (BEGIN … COMMIT) per resource: on SQLite the submission's and the finish's. On PostgreSQL
# none: a create's finish is one statement of its own, and so is the first submission of an application
# (it was BEGIN, a locking read, the writes and COMMIT).
TRANSACTIONS = {"sqlite": 2, "postgresql": 0}


def spec(app: str) -> str:
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\ncontainers:\n  main:\n    image: nginx\n"
        "resources:\n  db:\n    type: test-db\n"
    )


async def test_statements_per_resource_stay_low(store: Store, make_provider: ProviderFactory) -> None:
    wf = workflow_yaml("provision-test", "- name: noop\n  type: policy\n  config:\n    script: 'true'\n")
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    seen: list[tuple[str, str]] = []
    active = asyncio.Event()

    def watch(event: StateEvent) -> None:  # in process, no queries of its own
        seen.append((event.application_name, event.to_state))
        if event.to_state in ("ACTIVE", "FAILED"):
            active.set()

    store.hub.add_listener(watch)
    begun: list[str] = []
    async with running_engine(store, catalog) as engine:
        await specs.submit(store, catalog, spec("warm-up"), engine=engine)
        await settle(store, "warm-up")
        with counting(store, begun) as statements:
            for i in range(10):
                active.clear()
                await specs.submit(store, catalog, spec(f"counted-{i}"), engine=engine)
                await asyncio.wait_for(active.wait(), 10)
                assert [t for a, t in seen if a == f"counted-{i}"] == ["REQUESTED", "PROVISIONING", "ACTIVE"]
    per_resource = len(statements) / 10
    assert len(begun) / 10 <= TRANSACTIONS[store.dialect], len(begun) / 10
    assert per_resource <= PER_RESOURCE[store.dialect], (
        per_resource,
        sorted({s.split(" WHERE ")[0][:60] for s in statements}),
    )
