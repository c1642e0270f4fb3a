"""Expected errors as GraphQL errors with `extensions.code` (and `problems` for specs)."""

from __future__ import annotations

from collections.abc import Iterable

from graphql import GraphQLError

from innominatus.problems import Problem


def bad_input(message: str, problems: Iterable[Problem] | None = None) -> GraphQLError:
    extensions: dict[str, object] = {"code": "BAD_USER_INPUT"}
    if problems is not None:
        extensions["problems"] = [{"path": p.path, "message": p.message} for p in problems]
    return GraphQLError(message, extensions=extensions)


def not_found(kind: str, key: str) -> GraphQLError:
    return GraphQLError(f"{kind} '{key}' not found", extensions={"code": "NOT_FOUND"})


def forbidden(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "FORBIDDEN"})
