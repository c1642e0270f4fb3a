"""What every service function works with: the running app's parts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from innominatus.auth import Authenticator, Principal
from innominatus.providers import Catalog
from innominatus.ratelimit import RateLimiter, SharedRateLimiter
from innominatus.service.errors import Forbidden, RateLimited
from innominatus.store import Store

if TYPE_CHECKING:
    from innominatus.engine import Engine


@dataclass
class Services:
    store: Store
    catalog: Catalog
    authenticator: Authenticator
    rate_limiter: RateLimiter | SharedRateLimiter
    # Re-reads every provider source and swaps the catalog in; raises CatalogError and keeps the old one.
    reload_catalog: Callable[[], Awaitable[Catalog]] | None = None
    # Claims a submission's new resources in its own transaction (None: they wait for a claim pass).
    engine: Engine | None = None

    async def count_change(self, caller: Principal) -> None:
        """Every operation that changes something counts against the caller's token, whatever surface
        it came through; refused ones count too."""
        if not await self.rate_limiter.allow(caller.token_id or "dev"):
            raise RateLimited("too many mutations for this token; slow down and try again shortly")


def require_admin(caller: Principal, action: str) -> None:
    if not caller.is_admin:
        raise Forbidden(f"only an admin token may {action}")
