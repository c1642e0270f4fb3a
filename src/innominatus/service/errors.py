"""The one error hierarchy of the service layer. Every surface maps it the same way: GraphQL errors
carry `code` (and `problems`), REST answers carry the HTTP `status` and `{"error", "problems"}`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from innominatus.problems import Problem


class ServiceError(Exception):
    code: ClassVar[str] = "INTERNAL_SERVER_ERROR"
    status: ClassVar[int] = 500

    def __init__(self, message: str, problems: Iterable[Problem] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems)

    @property
    def extensions(self) -> dict[str, object]:
        """What a GraphQL error made from this one carries (graphql-core copies it over)."""
        extensions: dict[str, object] = {"code": self.code}
        if self.problems:
            extensions["problems"] = [{"path": p.path, "message": p.message} for p in self.problems]
        return extensions


class BadInput(ServiceError):
    """The request cannot be done as asked; `problems` say what and where (path: message)."""

    code = "BAD_USER_INPUT"
    status = 400


class NotFound(ServiceError):
    """Unknown, or another team's: the caller cannot tell which."""

    code = "NOT_FOUND"
    status = 404

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} '{key}' not found")
        self.kind = kind
        self.key = key


class Forbidden(ServiceError):
    code = "FORBIDDEN"
    status = 403


class Unauthenticated(ServiceError):
    code = "UNAUTHENTICATED"
    status = 401


class RateLimited(ServiceError):
    code = "RATE_LIMITED"
    status = 429


class TooLarge(ServiceError):
    code = "PAYLOAD_TOO_LARGE"
    status = 413
