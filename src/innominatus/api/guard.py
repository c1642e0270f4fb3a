"""What every operation passes before it runs, as one schema extension: a valid token, the token
limit while parsing, the limit rules (depth, aliases, cost) while validating, and caches for both
(the service layer does the rest: visibility, limits per operation). One extension instead of five:
Strawberry sets up every extension's hooks for every request, which cost more than the hooks' work."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

from graphql import GraphQLError, parse
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

UNAUTHENTICATED_MESSAGE = "authentication required: send a valid token as 'Authorization: Bearer <token>'"
SUBSCRIPTION_OVER_HTTP = (
    "subscriptions run over the websocket at /graphql (protocol graphql-transport-ws); "
    "over HTTP only queries and mutations"
)
MAX_TOKENS = 2000
CACHED_DOCUMENTS = 256  # distinct query texts kept parsed and validated (bounded: clients choose them)


def unauthenticated() -> GraphQLError:
    return GraphQLError(UNAUTHENTICATED_MESSAGE, extensions={"code": "UNAUTHENTICATED"})


@lru_cache(maxsize=CACHED_DOCUMENTS)
def _parse(query: str, max_tokens: int) -> Any:
    return parse(query, max_tokens=max_tokens)


def _validator() -> Any:
    from strawberry.schema.schema import validate_document  # (imported late: a cycle otherwise)

    return lru_cache(maxsize=CACHED_DOCUMENTS)(validate_document)


_validate = _validator()


class Guard(SchemaExtension):
    """`rules`: the extra validation rules, built once (the validation cache keys on them)."""

    rules: Sequence[Any] = ()

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        # Before parsing: a caller without a valid token gets nothing, not even validation messages.
        if getattr(context.context, "principal", None) is None:
            raise unauthenticated()
        context.validation_rules = (*context.validation_rules, *self.rules)
        context.parse_options["max_tokens"] = MAX_TOKENS
        yield

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        context.graphql_document = _parse(context.query, context.parse_options["max_tokens"])
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        errors = _validate(context.schema._schema, context.graphql_document, context.validation_rules)
        if (
            not errors
            and context.operation_type == OperationType.SUBSCRIPTION
            and not getattr(context.context, "websocket", False)
        ):
            errors = [GraphQLError(SUBSCRIPTION_OVER_HTTP, extensions={"code": "BAD_USER_INPUT"})]
        context.pre_execution_errors = errors
        yield


def guard_with(rules: Sequence[Any]) -> type[Guard]:
    return type("Guard", (Guard,), {"rules": tuple(rules)})
