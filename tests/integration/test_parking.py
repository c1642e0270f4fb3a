"""Resources waiting for a dependency are parked: later claim passes do not read them again, and a
backlog of them never delays other work."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from innominatus import specs
from innominatus.db import models
from innominatus.events import StateEvent
from innominatus.providers import load_catalog
from innominatus.store import Store
from tests.conftest import ProviderFactory, workflow_yaml
from tests.integration.helpers import running_engine, settle
from tests.integration.test_query_counts import counting


def dependents_spec(app: str, count: int) -> str:
    lines = [
        "apiVersion: score.dev/v1b1",
        f"metadata:\n  name: {app}",
        "containers:\n  main:\n    image: nginx",
        "resources:\n  broken:\n    type: test-fail",
    ]
    for i in range(count):
        lines.append(f"  r{i}:\n    type: test-db\n    params:\n      host: ${{resources.broken.host}}")
    return "\n".join(lines) + "\n"


async def test_parked_backlog_larger_than_a_batch_does_not_delay_other_work(
    store: Store, make_provider: ProviderFactory
) -> None:
    ok = workflow_yaml("provision-test", "- name: ok\n  type: policy\n  config:\n    script: 'true'\n")
    fail = workflow_yaml("fail-test", "- name: fails\n  type: policy\n  config:\n    script: 'exit 3'\n")
    catalog = load_catalog(
        make_provider(
            {"provision-test": ok, "fail-test": fail},
            types={"test-db": {"create": "provision-test"}, "test-fail": {"create": "fail-test"}},
        ),
        None,
    )
    # A sweep far beyond the test's timeout: only wake-ups can get the work done in time.
    async with running_engine(store, catalog, concurrency=2, sweep_interval=600):
        await specs.submit(store, catalog, dependents_spec("parked", 12))
        [failed] = [e for e in await settle(store, "parked", count=1) if e.to_state == "FAILED"]
        await specs.submit(
            store,
            catalog,
            "apiVersion: score.dev/v1b1\nmetadata:\n  name: later\ncontainers:\n  main:\n    image: nginx\n"
            "resources:\n  db:\n    type: test-db\n",
        )
        events = await settle(store, "later", count=1, timeout=10)
    assert events[-1].to_state == "ACTIVE"
    async with store.session() as session:
        parked = await session.scalar(
            select(func.count()).select_from(models.Resource).where(models.Resource.waiting_for == "broken")
        )
        requested = await session.scalar(
            select(func.count()).select_from(models.Resource).where(models.Resource.state == "REQUESTED")
        )
    assert failed.resource_id
    assert (parked, requested) == (12, 12)  # every dependent waits, parked: no pass reads them again


async def test_an_active_wakes_a_claim_pass_only_when_it_released_something(
    store: Store, make_provider: ProviderFactory
) -> None:
    """The numbering says which ACTIVE events released parked resources (the SQLite writer, the
    PostgreSQL function): those wake a claim pass at once, the others none."""
    slow = workflow_yaml(
        "slow-test",
        "- name: make\n  type: policy\n  config:\n    script: 'sleep 0.3; echo host=h >> \"$INNOMINATUS_OUTPUT\"'\n",
        outputs="  host: '{{ steps.make.outputs.host }}'\n",
    )
    ok = workflow_yaml("provision-test", "- name: ok\n  type: policy\n  config:\n    script: 'true'\n")
    catalog = load_catalog(
        make_provider(
            {"provision-test": ok, "slow-test": slow},
            types={"test-db": {"create": "provision-test"}, "test-slow": {"create": "slow-test"}},
        ),
        None,
    )
    chain = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: chain\ncontainers:\n  main:\n    image: nginx\n"
        "resources:\n  base:\n    type: test-slow\n"
        + "".join(
            f"  r{i}:\n    type: test-db\n    params:\n      host: ${{resources.base.host}}\n"
            for i in range(3)
        )
    )
    alone = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: alone\ncontainers:\n  main:\n    image: nginx\n"
        "resources:\n  db:\n    type: test-db\n"
    )
    actives: dict[tuple[str, str], bool] = {}

    def watch(event: StateEvent) -> None:
        if event.to_state == "ACTIVE":
            name = event.resource.name if event.resource is not None else "?"
            actives[(event.application_name, name)] = event.released

    store.hub.add_listener(watch)
    # A sweep far beyond the test's timeout: only the wake-up of base's ACTIVE can claim its dependents.
    async with running_engine(store, catalog, concurrency=4, sweep_interval=600) as engine:
        await specs.submit(store, catalog, chain, engine=engine)
        events = await settle(store, "chain", count=4, timeout=10)
        async with asyncio.timeout(5):
            while engine.running_count:  # runs end just after their ACTIVE: a slot for `alone`'s claim
                await asyncio.sleep(0.01)
        with counting(store) as statements:
            await specs.submit(store, catalog, alone, engine=engine)
            await settle(store, "alone", count=1, timeout=10)
            await asyncio.sleep(0.2)  # time for a claim pass, were one woken
    assert sorted(e.to_state for e in events if e.to_state in ("ACTIVE", "FAILED")) == ["ACTIVE"] * 4
    waited = [
        e
        for e in events
        if e.to_state == "REQUESTED" and e.resource is not None and e.resource.name != "base"
    ]
    assert len(waited) == 3
    assert actives == {
        ("chain", "base"): True,  # its dependents were parked behind it
        ("chain", "r0"): False,
        ("chain", "r1"): False,
        ("chain", "r2"): False,
        ("alone", "db"): False,
    }
    claim_passes = [s for s in statements if "waiting_for IS NULL" in s]
    assert claim_passes == [], claim_passes
