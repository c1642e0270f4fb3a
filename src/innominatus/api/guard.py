"""Every operation needs a valid token (the service layer does the rest: visibility, limits)."""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

UNAUTHENTICATED_MESSAGE = "authentication required: send a valid token as 'Authorization: Bearer <token>'"


def unauthenticated() -> GraphQLError:
    return GraphQLError(UNAUTHENTICATED_MESSAGE, extensions={"code": "UNAUTHENTICATED"})


class Guard(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        # Before parsing: a caller without a valid token gets nothing, not even validation messages.
        if getattr(self.execution_context.context, "principal", None) is None:
            raise unauthenticated()
        yield
