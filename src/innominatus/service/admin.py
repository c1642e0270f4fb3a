"""What only an admin may do: manage API tokens and reload the provider catalog."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from innominatus import auth
from innominatus.auth import Principal
from innominatus.db import models
from innominatus.problems import Problem
from innominatus.providers import Catalog, CatalogError
from innominatus.service.context import Services, require_admin
from innominatus.service.errors import BadInput, NotFound


async def tokens(services: Services, caller: Principal) -> list[models.Token]:
    require_admin(caller, "manage tokens")
    async with services.store.session() as session:
        return list(await session.scalars(select(models.Token).order_by(models.Token.created_at)))


async def create_token(
    services: Services,
    caller: Principal,
    team: str,
    role: str = auth.MEMBER,
    expires_in: str | None = None,
    description: str | None = None,
) -> tuple[models.Token, str]:
    """The row and the token itself (shown only here, once)."""
    await services.count_change(caller)
    require_admin(caller, "manage tokens")
    try:
        expiry: timedelta | None = auth.parse_expiry(expires_in)
        async with services.store.transaction() as session:
            return await auth.create_token(session, team, role, expires_in=expiry, description=description)
    except ValueError as exc:  # "<field>: <what is wrong>"
        field, _, message = str(exc).partition(": ")
        raise BadInput(str(exc), [Problem(field, message)]) from None


async def revoke_token(services: Services, caller: Principal, token_id: str) -> models.Token:
    await services.count_change(caller)
    require_admin(caller, "manage tokens")
    async with services.store.transaction() as session:
        row = await session.get(models.Token, token_id)
        if row is None:
            raise NotFound("token", token_id)
        row.revoked_at = row.revoked_at or models.utcnow()
        return row


async def reload_providers(services: Services, caller: Principal) -> tuple[Catalog, str | None]:
    """The catalog in force afterwards, and why a reload was refused (None: it was not)."""
    await services.count_change(caller)
    require_admin(caller, "reload providers")
    assert services.reload_catalog is not None
    try:
        return await services.reload_catalog(), None
    except CatalogError as exc:
        return services.catalog, str(exc)
