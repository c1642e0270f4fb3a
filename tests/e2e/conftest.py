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


def http_client(server: Server) -> Client:
    return Client(transport=HTTPXAsyncTransport(url=server.graphql, timeout=30))


def ws_client(server: Server) -> Client:
    return Client(transport=WebsocketsTransport(url=server.websocket))
