"""Resources waiting for a dependency are parked: later claim passes do not read them again, and a
backlog of them never delays other work."""

from __future__ import annotations

from sqlalchemy import func, select

from innominatus import specs
from innominatus.db import models
from innominatus.providers import load_catalog
from innominatus.store import Store
from tests.conftest import ProviderFactory, workflow_yaml
from tests.integration.helpers import running_engine, settle


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
