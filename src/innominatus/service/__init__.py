"""The service layer: every operation a caller can start, as one function that takes the running app's
services, the caller and its arguments, and owns its transaction, visibility rule, limits and errors.

- `reads`: providers, applications, resources, workflows (paged), each scoped to the caller's team;
- `changes`: submit, update, delete, retry;
- `admin`: tokens and provider reloads;
- `watches`: the live streams (resource state changes, workflow steps), scoped the same way;
- `errors`: the one error hierarchy every surface maps (GraphQL codes, HTTP statuses).

GraphQL resolvers (api/schema.py), REST handlers (api/rest.py) and the websocket layer only parse, call
and shape.
"""

from innominatus.service.context import Services
from innominatus.service.errors import (
    BadInput,
    Forbidden,
    NotFound,
    RateLimited,
    ServiceError,
    TooLarge,
    Unauthenticated,
)

__all__ = [
    "BadInput",
    "Forbidden",
    "NotFound",
    "RateLimited",
    "ServiceError",
    "Services",
    "TooLarge",
    "Unauthenticated",
]
