"""A real server per test module (SQLite and PostgreSQL), and gql clients for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gql import Client
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

from tests.conftest import fresh_pg_database
from tests.e2e.server import Server, run_server


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"server-{request.param}")
    url = None
    if request.param == "postgres":
        url = fresh_pg_database(request.getfixturevalue("pg_server")).replace(
            "postgresql://", "postgresql+asyncpg://", 1
        )
    with run_server(workdir, database_url=url) as srv:
        yield srv


_ADMIN = object()


def http_client(server: Server, token: str | object | None = _ADMIN) -> Client:
    """A gql HTTP client; by default with the server's admin token, `token=None` sends none."""
    chosen = server.admin_token if token is _ADMIN else token
    headers = {"Authorization": f"Bearer {chosen}"} if chosen else {}
    return Client(transport=HTTPXAsyncTransport(url=server.graphql, timeout=30, headers=headers))


def ws_client(server: Server, token: str | object | None = _ADMIN) -> Client:
    """A gql websocket client that authenticates in connection_init."""
    chosen = server.admin_token if token is _ADMIN else token
    payload = {"Authorization": f"Bearer {chosen}"} if chosen else {}
    return Client(transport=WebsocketsTransport(url=server.websocket, init_payload=payload))
