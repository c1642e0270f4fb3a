"""Every operation needs a valid token; mutations are rate limited per token."""

from __future__ import annotations

from collections.abc import Iterator

from graphql import ExecutionResult, GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

UNAUTHENTICATED_MESSAGE = "authentication required: send a valid token as 'Authorization: Bearer <token>'"


def unauthenticated() -> GraphQLError:
    return GraphQLError(UNAUTHENTICATED_MESSAGE, extensions={"code": "UNAUTHENTICATED"})


class Guard(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        # Before parsing: a caller without a valid token gets nothing, not even validation messages.
        if getattr(self.execution_context.context, "principal", None) is None:
            raise unauthenticated()
        yield

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context.context
        principal = context.principal
        if self.execution_context.operation_type == OperationType.MUTATION:
            key = principal.token_id or "dev"
            if not context.services.rate_limiter.allow(key):
                error = GraphQLError(
                    "too many mutations for this token; slow down and try again shortly",
                    extensions={"code": "RATE_LIMITED"},
                )
                self.execution_context.result = ExecutionResult(data=None, errors=[error])
        yield
