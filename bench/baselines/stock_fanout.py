"""Stock Strawberry baseline for bench/fanout.py: a subscription broadcasting in-memory events.

`resourceStateChanged(application: String!)` yields `{sequence toState resource {name state}}` objects built
in memory (plain attributes, no resolvers doing I/O). Each subscriber owns an `asyncio.Queue` registered in
a set; the mutation `publish(application, count, firstSequence)` puts `count` events into every matching
queue at once and answers how many queues got them; the query `subscribers(application)` counts the live
ones. Served like innominatus serves itself: `strawberry.asgi.GraphQL` in a Starlette route, on uvicorn
with one worker, `loop="auto"` (uvloop when installed), `http="auto"` (httptools when installed) and
`ws="websockets-sansio"`; graphql-transport-ws only, no extensions, no authentication.

    python bench/baselines/stock_fanout.py --port 8123 [--host 127.0.0.1] [--log-level info]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncGenerator
from enum import Enum

import strawberry
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL


@strawberry.enum
class ResourceState(Enum):
    REQUESTED = "REQUESTED"
    PROVISIONING = "PROVISIONING"
    ACTIVE = "ACTIVE"


@strawberry.type
class Resource:
    name: str
    state: ResourceState


@strawberry.type
class ResourceStateEvent:
    sequence: int
    to_state: ResourceState
    resource: Resource


SUBSCRIBERS: set[tuple[str, asyncio.Queue[ResourceStateEvent]]] = set()


@strawberry.type
class Query:
    @strawberry.field
    def subscribers(self, application: str) -> int:
        return sum(1 for app, _ in SUBSCRIBERS if app == application)


@strawberry.type
class Mutation:
    @strawberry.mutation
    def publish(self, application: str, count: int = 1, first_sequence: int = 1) -> int:
        """Put `count` ACTIVE events (sequence s names resource r{s-1}) into every queue of `application`."""
        queues = [queue for app, queue in SUBSCRIBERS if app == application]
        for i in range(count):
            sequence = first_sequence + i
            event = ResourceStateEvent(
                sequence=sequence,
                to_state=ResourceState.ACTIVE,
                resource=Resource(name=f"r{sequence - 1}", state=ResourceState.ACTIVE),
            )
            for queue in queues:
                queue.put_nowait(event)
        return len(queues)


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def resource_state_changed(self, application: str) -> AsyncGenerator[ResourceStateEvent, None]:
        entry: tuple[str, asyncio.Queue[ResourceStateEvent]] = (application, asyncio.Queue())
        SUBSCRIBERS.add(entry)
        try:
            while True:
                yield await entry[1].get()
        finally:
            SUBSCRIBERS.discard(entry)


async def ready(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ready")


def create_app() -> Starlette:
    graphql = GraphQL(
        strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription),
        subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
    )
    return Starlette(
        routes=[
            Route("/ready", ready),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args()
    uvicorn.run(
        create_app(), host=args.host, port=args.port, log_level=args.log_level, ws="websockets-sansio"
    )


if __name__ == "__main__":
    main()
