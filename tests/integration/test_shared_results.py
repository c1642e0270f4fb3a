"""Subscribers that ask the same thing get one execution per event; others get their own."""

from __future__ import annotations

import asyncio
from typing import Any

from innominatus.api.context import Context, Services
from innominatus.api.schema import schema
from innominatus.auth import DEV_ADMIN, Authenticator
from innominatus.providers import Catalog
from innominatus.ratelimit import RateLimiter
from innominatus.states import ResourceState
from innominatus.store import Store
from tests.integration.test_events import make_resource, move

NAMES = (
    "subscription($app: String) { resourceStateChanged(application: $app) { sequence resource { name } } }"
)
STATES = "subscription { resourceStateChanged { toState resource { state type } } }"


async def first_result(
    store: Store, query: str, variables: dict[str, Any] | None, ready: asyncio.Event
) -> Any:
    services = Services(
        store=store, catalog=Catalog([]), authenticator=Authenticator(store), rate_limiter=RateLimiter(10, 1)
    )
    context = Context(services=services, principal=DEV_ADMIN, websocket=True)
    results = await schema.subscribe(query, variable_values=variables, context_value=context)
    ready.set()
    async with asyncio.timeout(10):
        async for result in results:  # type: ignore[union-attr]
            await results.aclose()  # type: ignore[union-attr]
            return result
    raise AssertionError("no event")


async def test_same_operation_shares_one_result_and_others_get_their_own(store: Store) -> None:
    rid = await make_resource(store, "shared")
    queries = [(NAMES, {"app": "shared"}), (NAMES, {"app": "shared"}), (STATES, None), (NAMES, None)]
    readies = [asyncio.Event() for _ in queries]
    tasks = [
        asyncio.create_task(first_result(store, q, v, r)) for (q, v), r in zip(queries, readies, strict=True)
    ]
    await asyncio.gather(*(r.wait() for r in readies))
    await asyncio.sleep(0.05)  # the subscriptions have joined the live stream
    await move(store, rid, ResourceState.PROVISIONING)
    same_a, same_b, states, other_variables = await asyncio.gather(*tasks)

    for result in (same_a, same_b, states, other_variables):
        assert result.errors is None, result.errors
    assert same_a.data == {"resourceStateChanged": {"sequence": 2, "resource": {"name": "db"}}}
    assert same_a.data is same_b.data  # executed once for both
    assert states.data == {
        "resourceStateChanged": {
            "toState": "PROVISIONING",
            "resource": {"state": "PROVISIONING", "type": "t"},
        }
    }
    assert other_variables.data == same_a.data
    assert other_variables.data is not same_a.data  # other variables: an execution of its own
