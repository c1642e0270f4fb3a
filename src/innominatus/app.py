"""The Starlette app: its lifespan wires database, catalog, event hub and engine together."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from innominatus.api.context import Context, Services
from innominatus.api.limits import BodySizeLimit
from innominatus.api.schema import schema
from innominatus.config import Settings
from innominatus.db import database
from innominatus.engine import Engine
from innominatus.providers import load_catalog
from innominatus.store import Store

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024


class GraphQLApp(GraphQL[Context, None]):
    async def get_context(self, request: Request | WebSocket, response: object) -> Context:
        services: Services = request.app.state.services
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        return Context(services=services, token=token)


async def health(_: Request) -> JSONResponse:
    return JSONResponse({"status": "healthy"})


async def ready(request: Request) -> JSONResponse:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is not None and await database.ping(services.store.engine):
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "unavailable", "reason": "database does not answer"}, status_code=503)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    # The catalog loads before anything listens: a broken provider stops the server with its reason.
    catalog = load_catalog(settings.providers_dir, settings.resolved_config_file())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = database.create_engine(settings.database_url)
        await database.upgrade(engine)
        store = Store(engine)
        orchestrator = Engine(
            store,
            catalog,
            concurrency=settings.concurrency,
            sweep_interval=settings.sweep_interval,
            lease_seconds=settings.lease_seconds,
        )
        app.state.services = Services(store=store, catalog=catalog)
        app.state.engine = orchestrator
        await orchestrator.start()
        try:
            yield
        finally:
            await orchestrator.stop()
            await store.close()

    graphql = GraphQLApp(
        schema, subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL], graphql_ide="graphiql"
    )
    return Starlette(
        routes=[
            Route("/health", health),
            Route("/ready", ready),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
        ],
        middleware=[Middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)],
        lifespan=lifespan,
    )
