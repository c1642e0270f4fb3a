"""The CLI's GraphQL client (gql over HTTP), with errors turned into one readable line."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
from gql import Client, GraphQLRequest
from gql.transport.exceptions import (
    TransportConnectionFailed,
    TransportProtocolError,
    TransportQueryError,
    TransportServerError,
)
from gql.transport.httpx import HTTPXAsyncTransport

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
        try:
            async with Client(transport=transport, fetch_schema_from_transport=False) as session:
                return await session.execute(GraphQLRequest(query, variable_values=variables))
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
