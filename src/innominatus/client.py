"""The CLI's GraphQL client (gql over HTTP), with errors turned into one readable line."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets
from gql import Client, GraphQLRequest
from gql.transport.exceptions import (
    TransportClosed,
    TransportConnectionFailed,
    TransportProtocolError,
    TransportQueryError,
    TransportServerError,
)
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

DEFAULT_SERVER = "http://localhost:8081"


@dataclass
class ClientError(Exception):
    message: str
    code: str | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message


class ApiClient:
    def __init__(self, server: str, token: str | None, timeout: float = 30) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.timeout = timeout

    def execute(self, query: str, **variables: Any) -> dict[str, Any]:
        return asyncio.run(self.execute_async(query, **variables))

    async def execute_async(self, query: str, **variables: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        transport = HTTPXAsyncTransport(url=f"{self.server}/graphql", headers=headers, timeout=self.timeout)
        with self._errors():
            async with Client(transport=transport, fetch_schema_from_transport=False) as session:
                return await session.execute(GraphQLRequest(query, variable_values=variables))
        raise AssertionError("unreachable")

    async def subscribe(self, query: str, **variables: Any) -> AsyncIterator[dict[str, Any]]:
        """A live subscription over graphql-transport-ws, authenticated in connection_init."""
        payload = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        url = self.server.replace("http", "ws", 1) + "/graphql"
        with self._errors():
            async with Client(transport=WebsocketsTransport(url=url, init_payload=payload)) as session:
                events = session.subscribe(GraphQLRequest(query, variable_values=variables))
                async with contextlib.aclosing(events):
                    async for item in events:
                        yield item

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except TransportQueryError as exc:
            error = (exc.errors or [{}])[0]
            extensions = error.get("extensions") or {}
            code = extensions.get("code")
            message = error.get("message", str(exc))
            if code == "UNAUTHENTICATED":
                message = f"{self.server} refused the token (set --token or INNOMINATUS_TOKEN)"
            raise ClientError(message, code, extensions.get("problems") or []) from None
        except (TransportConnectionFailed, httpx.ConnectError, httpx.ConnectTimeout, OSError):
            raise ClientError(f"cannot reach the innominatus server at {self.server}") from None
        except TransportServerError as exc:
            raise ClientError(f"{self.server} answered with an error: {exc}") from None
        except TransportProtocolError as exc:
            raise ClientError(f"{self.server} did not answer as an innominatus server: {exc}") from None
        except TransportClosed as exc:
            if "4403" in str(exc) or "Forbidden" in str(exc):
                raise ClientError(
                    f"{self.server} refused the token (set --token or INNOMINATUS_TOKEN)"
                ) from None
            raise ClientError(f"{self.server} closed the connection: {exc}") from None
        except websockets.exceptions.WebSocketException as exc:
            raise ClientError(f"{self.server} closed the connection: {exc}") from None
