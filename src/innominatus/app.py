"""The Starlette app: its lifespan wires database, secrets, tokens, catalog, event hub and engine."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from innominatus import auth, replicas
from innominatus.api import rest, web
from innominatus.api.context import Context, Services
from innominatus.api.limits import BodySizeLimit
from innominatus.api.loopback import LoopbackOnly
from innominatus.api.schema import make_schema
from innominatus.auth import bearer
from innominatus.config import Settings
from innominatus.db import database
from innominatus.engine import Engine
from innominatus.logs import RequestId
from innominatus.metrics import Metrics
from innominatus.providers import Catalog, load_catalog
from innominatus.ratelimit import parse_rate, rate_limiter
from innominatus.sealing import SecretBox
from innominatus.store import Store
from innominatus.workflows.policy import pidfd_child_watcher

log = logging.getLogger(__name__)


# Nearly everything a request makes is freed by its reference count. Under figure 2's load the default
# (a young collection per 700 more objects) ran about 100 young and 9 middle collections a second, 0.47 s
# of 10 s; with this, about 9 and 1, 0.16 s.
_YOUNG_COLLECTION_AFTER = 10_000


def _settle_heap() -> None:
    """Once started: what start-up made (modules, the schema, SQLAlchemy's and Strawberry's structures,
    several hundred thousand objects) is left out of the cycle collector's full passes from now on.
    Under figure 2's load a full pass ran about once a second and walked all of it: 76-128 ms each, the
    loop stopped meanwhile, about 8% of the server's time; 8-33 ms with it frozen. What start-up left
    as garbage is collected first. (Start-up objects dropped later, a replaced catalog, are still freed
    by their reference counts, only cycles among them would stay.)"""
    gc.collect()
    gc.freeze()
    gc.set_threshold(_YOUNG_COLLECTION_AFTER, *gc.get_threshold()[1:])


MAX_BODY_BYTES = 1024 * 1024
MAX_SUBSCRIPTIONS_PER_CONNECTION = 100


_WATCH = "innominatus.token_watch"  # websocket scope: the connection's token watch and its end
_CLOSING = "innominatus.closing"


class GraphQLApp(GraphQL[Context, None]):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await super().__call__(scope, receive, send)
            return
        try:
            await super().__call__(scope, receive, send)
        finally:
            watched = scope.get(_WATCH)
            if watched is not None:
                watch, end = watched
                watch.detach(end)
                scope["app"].state.services.authenticator.unwatch(watch)

    async def render_graphql_ide(self, request: Request) -> Response:
        # Our own GraphiQL build, served from here (Strawberry's page loads it from a CDN).
        return web.graphiql()

    async def get_context(self, request: Request | WebSocket, response: object) -> Context:
        services: Services = request.app.state.services
        if isinstance(request, WebSocket):
            # Authenticated in connection_init (on_ws_connect).
            return Context(services=services, websocket=True, connection=request)
        token = bearer(request.headers.get("authorization"))
        return Context(
            services=services, token=token, principal=await services.authenticator.principal(token)
        )

    async def on_ws_connect(self, context: Context) -> None:
        params = context.connection_params or {}
        token = bearer(params.get("Authorization") or params.get("authorization"))
        principal = await context.services.authenticator.principal(token)
        if principal is None:
            raise ConnectionRejectionError  # closes the socket with 4403
        context.token, context.principal = token, principal
        # A token revoked or expired while the socket is open closes it (4403): no further query,
        # mutation or subscription runs on it, and live ones end with it.
        watch = context.services.authenticator.watch(token)
        connection = context.connection
        if watch is None or connection is None:
            return

        def end() -> None:
            closing = asyncio.ensure_future(_close(connection, 4403, "token revoked or expired"))
            connection.scope[_CLOSING] = closing  # kept until done

        connection.scope[_WATCH] = (watch, end)
        watch.attach(end)


async def _close(connection: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):  # already closed by the client, or mid-close
        await connection.close(code, reason)


async def metrics_text(request: Request) -> Response:
    """Prometheus text format; no token (no team or application names in it)."""
    metrics: Metrics = request.app.state.metrics
    body = await metrics.render(request.app.state.services.store, request.app.state.engine)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def health(_: Request) -> JSONResponse:
    return JSONResponse({"status": "healthy"})


async def ready(request: Request) -> JSONResponse:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is not None and await database.ping(services.store.engine):
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "unavailable", "reason": "database does not answer"}, status_code=503)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    # Everything that can be wrong in the configuration stops the server before it listens.
    catalog = load_catalog(settings.providers_dir, settings.resolved_config_file())
    limit, per = parse_rate(settings.rate_limit)
    box = SecretBox.from_settings(settings.secret_key, settings.resolved_secret_key_file())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = database.create_engine(settings.database_url)
        async with database.startup_lock(engine):
            await database.upgrade(engine)
            store = Store(engine, box=box)
            created = await auth.bootstrap(store, settings.admin_token)
        await store.sequencer.high_water()  # where this process's live stream starts, before any write
        authenticator = auth.Authenticator(store, dev=settings.dev)
        if settings.dev:
            log.warning(
                "DEV MODE: token 'test' is an admin token and requests without a token act as admin; "
                "serving on %s only",
                settings.host,
            )
        if created is not None:
            # Shown once, on stdout, for the operator: it is stored only as a hash.
            print(f"innominatus: created admin token (shown once, keep it safe): {created}", flush=True)
            sys.stdout.flush()
        metrics = Metrics()
        store.hub.add_listener(metrics.on_event)
        orchestrator = Engine(
            store,
            catalog,
            concurrency=settings.concurrency,
            sweep_interval=settings.sweep_interval,
            lease_seconds=settings.lease_seconds,
            metrics=metrics,
        )
        services = Services(
            store=store,
            catalog=catalog,
            authenticator=authenticator,
            rate_limiter=rate_limiter(engine, limit, per),
            engine=orchestrator,
        )

        async def reload_here() -> Catalog:
            # Off the event loop: git fetches may take a while. Running workflows keep their definitions.
            fresh = await asyncio.to_thread(
                load_catalog, settings.providers_dir, settings.resolved_config_file()
            )
            services.catalog = orchestrator.catalog = fresh
            log.info("providers reloaded: %s", ", ".join(fresh.providers) or "none")
            return fresh

        async def reload_catalog() -> Catalog:
            fresh = await reload_here()
            await replicas.announce_reload(store)
            return fresh

        services.reload_catalog = reload_catalog
        app.state.services = services
        app.state.engine = orchestrator
        app.state.metrics = metrics
        other_replicas = replicas.listener(store, orchestrator, reload_here)
        with pidfd_child_watcher():
            await orchestrator.start()
            if other_replicas is not None:
                other_replicas.start()
            _settle_heap()
            try:
                yield
            finally:
                if other_replicas is not None:
                    await other_replicas.stop()
                await orchestrator.stop()
                await authenticator.close()
                await store.close()

    graphql = GraphQLApp(
        make_schema(introspection=settings.introspection),
        subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
        graphql_ide="graphiql",
        max_subscriptions_per_connection=MAX_SUBSCRIPTIONS_PER_CONNECTION,
    )
    return Starlette(
        routes=[
            Route("/health", health),
            Route("/ready", ready),
            Route("/metrics", metrics_text),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            *rest.routes,
            *web.routes,
        ],
        middleware=[
            Middleware(RequestId),
            *([Middleware(LoopbackOnly)] if settings.dev else []),
            Middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES),
        ],
        lifespan=lifespan,
    )
