"""Stock Strawberry baseline for bench/reads.py: the `resources` query answered from memory.

`resources(application: String!): [Resource!]!` is an async resolver that builds `Resource(id, name, type,
state)` objects from rows loaded once at start from a JSON file (`{"<application>": [{"id", "name",
"type", "state"}, ...]}`, written by the benchmark from our server's own answer). No caches, no
extensions, no authentication (an Authorization header is ignored). Served like innominatus serves
itself: `strawberry.asgi.GraphQL` in a Starlette route, on uvicorn with one worker, `loop="auto"` (uvloop
when installed), `http="auto"` (httptools when installed), `ws="websockets-sansio"`.

    python bench/baselines/stock_reads.py --port 8124 --rows rows.json [--log-level info]
"""

from __future__ import annotations

import argparse
import json
from enum import Enum
from pathlib import Path
from typing import Any

import strawberry
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from strawberry.asgi import GraphQL


@strawberry.enum
class ResourceState(Enum):
    REQUESTED = "REQUESTED"
    PROVISIONING = "PROVISIONING"
    ACTIVE = "ACTIVE"
    UPDATING = "UPDATING"
    DELETING = "DELETING"
    DELETED = "DELETED"
    FAILED = "FAILED"


@strawberry.type
class Resource:
    id: strawberry.ID
    name: str
    type: str
    state: ResourceState


ROWS: dict[str, list[dict[str, Any]]] = {}


@strawberry.type
class Query:
    @strawberry.field
    async def resources(self, application: str) -> list[Resource]:
        return [
            Resource(
                id=strawberry.ID(r["id"]), name=r["name"], type=r["type"], state=ResourceState(r["state"])
            )
            for r in ROWS.get(application, [])
        ]


async def ready(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ready")


def create_app() -> Starlette:
    graphql = GraphQL(strawberry.Schema(query=Query))
    return Starlette(routes=[Route("/ready", ready), Route("/graphql", graphql, methods=["GET", "POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rows", type=Path, required=True, help='JSON file {"<application>": [rows]}')
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args()
    ROWS.update(json.loads(args.rows.read_text()))
    uvicorn.run(
        create_app(), host=args.host, port=args.port, log_level=args.log_level, ws="websockets-sansio"
    )


if __name__ == "__main__":
    main()
