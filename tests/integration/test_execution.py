"""Our executor: subscribers that ask the same thing get one execution per event, others their own;
lists read plain fields in one pass and answer exactly as graphql-core's own executor does."""

from __future__ import annotations

import asyncio
from enum import Enum
from typing import Any

import strawberry
from sqlalchemy import select

from innominatus import lifecycle
from innominatus.api.context import Context, Services
from innominatus.api.execution import Execution
from innominatus.api.schema import Mutation, Query, Subscription, schema
from innominatus.auth import DEV_ADMIN, Authenticator
from innominatus.db import models
from innominatus.providers import Catalog
from innominatus.ratelimit import RateLimiter
from innominatus.states import ResourceState
from innominatus.store import Store
from tests.integration.test_events import make_resource, move
from tests.integration.test_query_counts import counting

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


def _context(store: Store, principal: Any = DEV_ADMIN) -> Context:
    services = Services(
        store=store, catalog=Catalog([]), authenticator=Authenticator(store), rate_limiter=RateLimiter(10, 1)
    )
    return Context(services=services, principal=principal)


# The same resolvers executed by graphql-core's own executor: what every answer must equal.
REFERENCE = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription)

LISTS = [
    "{ resources { id name type state class provider errorMessage createdAt updatedAt application } }",
    "{ resources { __typename n: name s: state name } }",
    "query($app: String!) { resources(application: $app) { name ...F } } fragment F on Resource { type }",
    "{ resources { name ... on Resource { state } } }",
    "query($no: Boolean!) { resources { name state @skip(if: $no) type @include(if: $no) } }",
    "{ resources { name properties outputs dependsOn { name state } requiredBy { name } } }",
    "{ resources { name properties } }",
    "{ resources { name outputs } }",
    "{ resources(state: FAILED) { name errorMessage } }",
    "{ applications { name resources { name state } } }",
    "{ resources { name transitions { toState reason } } }",
]


async def test_lists_answer_exactly_as_the_stock_executor_does(store: Store) -> None:
    hub = await make_resource(store, "plain", "hub")
    app_id = await _application_id(store, "plain")
    async with store.transaction() as session:
        # A resource that references the hub, with properties, a class and nulls where allowed.
        user = models.Resource(
            application_id=app_id,
            application_name="plain",
            name="user",
            type="postgres",
            resource_class="large",
            properties={"db": "${resources.hub.host}", "n": 3},
            depends_on=["hub"],
            outputs={},
        )
        await lifecycle.create(session, user)
    await move(store, hub, ResourceState.PROVISIONING)
    await move(store, hub, ResourceState.FAILED)

    for query in LISTS:
        for variables in ({"app": "plain", "no": True}, {"app": "plain", "no": False}):
            ours = await schema.execute(query, variable_values=variables, context_value=_context(store))
            stock = await REFERENCE.execute(query, variable_values=variables, context_value=_context(store))
            assert ours.errors is None, (query, ours.errors)
            assert ours.data == stock.data, query
            assert ours.data and ours.data[next(iter(ours.data))], f"{query} answered nothing"

    listed = await schema.execute(LISTS[5], context_value=_context(store))
    assert listed.data is not None
    by_name = {r["name"]: r for r in listed.data["resources"]}
    assert by_name["user"]["properties"] == {"db": "${resources.hub.host}", "n": 3}
    assert by_name["user"]["dependsOn"] == [{"name": "hub", "state": "FAILED"}]
    assert by_name["hub"]["requiredBy"] == [{"name": "user"}]


PLAIN = "id application name type class state provider errorMessage createdAt updatedAt"


async def test_a_list_reads_only_the_columns_it_shows(store: Store) -> None:
    """Each plain field alone answers what it answers beside a field that reads the whole row; a list of
    names and states reads neither documents nor times."""
    await make_resource(store, "cols", "hub")
    rid = await make_resource(store, "cols-b", "other")
    await move(store, rid, ResourceState.PROVISIONING)
    await move(store, rid, ResourceState.FAILED)  # an error message
    whole = await schema.execute(f"{{ resources {{ {PLAIN} properties }} }}", context_value=_context(store))
    assert whole.errors is None and whole.data is not None
    rows = whole.data["resources"]
    assert len(rows) == 2 and all(row["createdAt"] and row["application"] for row in rows)
    for field in PLAIN.split():
        alone = await schema.execute(f"{{ resources {{ {field} }} }}", context_value=_context(store))
        assert alone.errors is None, (field, alone.errors)
        assert alone.data == {"resources": [{field: row[field]} for row in rows]}, field
    pair = await schema.execute("{ resources { updatedAt errorMessage } }", context_value=_context(store))
    assert pair.data == {"resources": [{k: row[k] for k in ("updatedAt", "errorMessage")} for row in rows]}

    with counting(store) as statements:
        listed = await schema.execute("{ resources { name state } }", context_value=_context(store))
    assert listed.data == {"resources": [{"name": r["name"], "state": r["state"]} for r in rows]}
    [statement] = statements
    shown = statement.split("FROM", 1)[0]
    assert "resources.name" in shown and "resources.state" in shown
    for unread in ("created_at", "updated_at", "error_message", "properties", "outputs"):
        assert f"resources.{unread}" not in shown, unread


async def _application_id(store: Store, name: str) -> str:
    async with store.session() as session:
        found = await session.scalar(select(models.Application.id).where(models.Application.name == name))
    assert found is not None
    return found


async def test_a_list_shows_a_change_the_moment_it_is_committed(store: Store) -> None:
    rid = await make_resource(store, "fresh")
    query = '{ resources(application: "fresh") { name state } }'
    before = await schema.execute(query, context_value=_context(store))
    assert before.data == {"resources": [{"name": "db", "state": "REQUESTED"}]}
    await move(store, rid, ResourceState.PROVISIONING)
    after = await schema.execute(query, context_value=_context(store))
    assert after.data == {"resources": [{"name": "db", "state": "PROVISIONING"}]}


# A toy schema on our executor: values no real row has (nulls where none may be, values an enum refuses),
# to show that the shortcut hands them to the ordinary executor and its ordinary errors.
@strawberry.enum
class Color(Enum):
    RED = "red"


@strawberry.type
class Item:
    name: str
    label: str | None
    color: Color


@strawberry.type
class ToyQuery:
    @strawberry.field
    async def items(self) -> list[Item]:
        return [Item(name="a", label=None, color=Color.RED), Item(name=None, label="x", color="blue")]  # type: ignore[arg-type]


TOY = strawberry.Schema(query=ToyQuery, execution_context_class=Execution)
TOY_STOCK = strawberry.Schema(query=ToyQuery)


async def test_values_the_types_refuse_get_the_ordinary_errors() -> None:
    for query in ("{ items { name label } }", "{ items { label color } }", "{ items { __typename label } }"):
        ours, stock = await TOY.execute(query), await TOY_STOCK.execute(query)
        assert ours.data == stock.data, query
        assert [(e.message, e.path) for e in ours.errors or []] == [
            (e.message, e.path) for e in stock.errors or []
        ], query
    broken = await TOY.execute("{ items { name label } }")
    assert broken.data is None  # `items` is a non-null list of non-null items: one null item voids it
    assert broken.errors is not None
    assert broken.errors[0].path == ["items", 1, "name"]
    assert "Cannot return null for non-nullable field Item.name" in broken.errors[0].message
    wrong_enum = await TOY.execute("{ items { label color } }")
    assert wrong_enum.errors is not None and wrong_enum.errors[0].path == ["items", 1, "color"]


@strawberry.type
class ManyQuery:
    @strawberry.field
    def numbers(self, count: int) -> list[int]:
        return list(range(count))

    @strawberry.field
    def items(self, count: int) -> list[Item]:
        return [Item(name=str(i), label=None, color=Color.RED) for i in range(count)]


MANY = strawberry.Schema(query=ManyQuery, execution_context_class=Execution)


async def test_a_query_stops_once_it_has_made_too_many_objects() -> None:
    fine = await MANY.execute("{ numbers(count: 150000) }")
    assert fine.errors is None and fine.data is not None and len(fine.data["numbers"]) == 150_000
    over = await MANY.execute("{ a: numbers(count: 150000) b: items(count: 60000) { name } }")
    assert over.errors is not None
    [error] = over.errors
    assert error.extensions == {"code": "QUERY_TOO_EXPENSIVE"}
    assert "made more than 200,000 objects" in error.message
    assert error.path == ["b"]
