"""The service functions on their own, without any web layer: visibility, pages, limits, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import update

from innominatus.auth import DEV_ADMIN, MEMBER, Authenticator, Principal
from innominatus.db import models
from innominatus.providers import Catalog, load_catalog
from innominatus.ratelimit import RateLimiter
from innominatus.service import (
    BadInput,
    Forbidden,
    NotFound,
    RateLimited,
    Services,
    admin,
    changes,
    reads,
    watches,
)
from innominatus.states import ResourceState
from innominatus.store import Store
from tests.conftest import ProviderFactory, workflow_yaml
from tests.integration.helpers import running_engine
from tests.integration.test_engine import spec_for
from tests.integration.test_events import make_resource, move

SHOP = Principal(team="shop", role=MEMBER, token_id="t-shop")
OTHER = Principal(team="other", role=MEMBER, token_id="t-other")


def services(store: Store, catalog: Catalog | None = None, limit: int = 1000) -> Services:
    return Services(store, catalog or Catalog([]), Authenticator(store), RateLimiter(limit, 60))


async def _team_resources(store: Store, app: str, team: str, names: list[str]) -> list[str]:
    ids = []
    for name in names:
        rid = await make_resource(store, f"{app}-{name}" if len(names) > 1 else app, name)
        ids.append(rid)
    async with store.transaction() as session:
        await session.execute(update(models.Resource).where(models.Resource.id.in_(ids)).values(team=team))
        await session.execute(
            update(models.Application).where(models.Application.name.like(f"{app}%")).values(team=team)
        )
    return ids


async def test_lists_come_in_pages_of_at_most_first(store: Store) -> None:
    ids = await _team_resources(store, "paged", "shop", [f"r{i}" for i in range(5)])
    svc = services(store)
    seen: list[str] = []
    after = None
    while True:
        page = await reads.resources(svc, SHOP, first=2, after=after)
        assert len(page) <= 2
        if not page:
            break
        seen += [r.id for r in page]
        after = page[-1].id
    assert seen == ids  # every one once, in creation order
    assert [a.name for a in await reads.applications(svc, SHOP, first=3)] == [
        "paged-r0",
        "paged-r1",
        "paged-r2",
    ]
    assert [a.name for a in await reads.applications(svc, SHOP, after="paged-r2")] == ["paged-r3", "paged-r4"]
    assert len(await reads.resources(svc, SHOP)) == 5  # default page: 100


@pytest.mark.parametrize("first", [0, -1, 1001])
async def test_a_page_size_out_of_range_is_refused(store: Store, first: int) -> None:
    with pytest.raises(BadInput) as refused:
        await reads.resources(services(store), SHOP, first=first)
    assert [p.path for p in refused.value.problems] == ["first"]
    assert "between 1 and 1000" in refused.value.message


async def test_a_cursor_of_another_team_is_refused_like_an_unknown_one(store: Store) -> None:
    [theirs] = await _team_resources(store, "theirs", "other", ["db"])
    svc = services(store)
    for cursor in (theirs, "no-such-id"):
        with pytest.raises(BadInput) as refused:
            await reads.resources(svc, SHOP, after=cursor)
        assert [p.path for p in refused.value.problems] == ["after"]
    with pytest.raises(BadInput):
        await reads.workflows(svc, SHOP, after="no-such-run")


async def test_another_teams_rows_are_not_found(store: Store) -> None:
    [theirs] = await _team_resources(store, "hidden", "other", ["db"])
    svc = services(store)
    assert await reads.resources(svc, SHOP) == []
    with pytest.raises(NotFound, match=f"resource '{theirs}' not found"):
        await reads.resource(svc, SHOP, theirs)
    with pytest.raises(NotFound):
        await changes.update_resource(svc, SHOP, theirs, {"x": 1})
    with pytest.raises(NotFound):
        await changes.delete_application(svc, SHOP, "hidden")
    assert (await reads.resource(svc, OTHER, theirs)).id == theirs


async def test_every_change_counts_against_the_callers_budget_refused_or_not(store: Store) -> None:
    svc = services(store, limit=2)
    with pytest.raises(BadInput):
        await changes.submit(svc, SHOP, "not: [a spec")
    with pytest.raises(NotFound):
        await changes.retry_resource(svc, SHOP, "nope")
    with pytest.raises(RateLimited):
        await changes.submit(svc, SHOP, "anything")
    with pytest.raises(NotFound):  # another token has its own budget
        await changes.delete_application(svc, OTHER, "nope")


async def test_a_refused_submission_writes_nothing_whatever_else_is_wrong(store: Store) -> None:
    """The count runs beside the spec's checks; a refusal still wins and stops the write."""
    svc = services(store, limit=1)
    good = "apiVersion: score.dev/v1b1\nmetadata:\n  name: late\ncontainers:\n  main:\n    image: nginx\n"
    await changes.submit(svc, SHOP, good.replace("late", "first"))
    with pytest.raises(RateLimited):
        await changes.submit(svc, SHOP, good)
    with pytest.raises(RateLimited):
        await changes.submit(svc, SHOP, "x" * 2_000_000)  # too large, and over budget: the refusal
    assert [a.name for a in await reads.applications(svc, SHOP)] == ["first"]


async def test_admin_functions_refuse_members_and_bad_values(store: Store) -> None:
    svc = services(store)
    with pytest.raises(Forbidden, match="only an admin token may manage tokens"):
        await admin.create_token(svc, SHOP, "shop")
    with pytest.raises(Forbidden):
        await admin.tokens(svc, SHOP)
    with pytest.raises(BadInput) as refused:
        await admin.create_token(svc, DEV_ADMIN, "shop\n")
    assert [p.path for p in refused.value.problems] == ["team"]
    assert await admin.tokens(svc, DEV_ADMIN) == []  # nothing stored
    with pytest.raises(BadInput) as bad:
        await changes.update_resource(svc, DEV_ADMIN, "x", ["not", "a", "mapping"])
    assert [p.path for p in bad.value.problems] == ["properties"]


async def test_a_members_stream_holds_its_teams_events_only(store: Store) -> None:
    [theirs] = await _team_resources(store, "stream-theirs", "other", ["db"])
    [mine] = await _team_resources(store, "stream-mine", "shop", ["db"])
    await move(store, theirs, ResourceState.PROVISIONING)  # events written with their teams
    await move(store, mine, ResourceState.PROVISIONING)
    svc = services(store)
    with pytest.raises(NotFound):
        async for _ in watches.state_changes(svc, SHOP, None, resource_id=theirs, after_sequence=0):
            pass
    with pytest.raises(NotFound):
        async for _ in watches.step_changes(svc, SHOP, None, workflow_id="no-such-run"):
            pass
    seen = []
    events = watches.state_changes(svc, SHOP, None, after_sequence=0)
    async with asyncio.timeout(5):
        async for event in events:
            seen.append(event.resource_id)
            if event.resource_id == mine:
                break
    await events.aclose()
    assert seen == [mine]  # the other team's event came first in the log, and was not shown


async def test_a_running_workflow_can_be_cancelled_and_retried(
    store: Store, make_provider: ProviderFactory, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    flag = tmp_path / "slow"
    flag.write_text("yes")
    script = f"echo $$ > '{pid_file}'\nif [ -f '{flag}' ]; then sleep 30; fi\necho done"
    wf = workflow_yaml(
        "provision-test",
        f"- name: nap\n  type: policy\n  config:\n    script: |\n      {script.replace(chr(10), chr(10) + '      ')}\n",
    )
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    svc = services(store, catalog)
    async with running_engine(store, catalog, lease_seconds=1.5) as engine:
        svc.engine = engine
        await changes.submit(svc, DEV_ADMIN, spec_for("cancel-app"))
        async with asyncio.timeout(10):
            while not pid_file.exists() or not pid_file.read_text().strip():
                await asyncio.sleep(0.05)
        pid = int(pid_file.read_text())
        [db] = await reads.resources(svc, DEV_ADMIN, application="cancel-app")
        run_id = db.workflow_execution_id
        with pytest.raises(NotFound):
            await changes.cancel_workflow(svc, SHOP, run_id)  # another team's run looks unknown
        cancelled = await changes.cancel_workflow(svc, DEV_ADMIN, run_id)
        assert cancelled.status == "CANCELLED"
        async with asyncio.timeout(5):  # the engine kills the step's process group at its next renewal
            while (
                Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
            ):
                await asyncio.sleep(0.1)
        [db] = await reads.resources(svc, DEV_ADMIN, application="cancel-app")
        assert db.state == "FAILED" and db.error_message.startswith("cancelled: workflow provision-test")
        with pytest.raises(BadInput, match="only a RUNNING workflow can be cancelled"):
            await changes.cancel_workflow(svc, DEV_ADMIN, run_id)
        flag.unlink()
        await changes.retry_resource(svc, DEV_ADMIN, db.id)
        async with asyncio.timeout(15):
            while (await reads.resources(svc, DEV_ADMIN, application="cancel-app"))[0].state != "ACTIVE":
                await asyncio.sleep(0.1)
