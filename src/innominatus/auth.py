"""API tokens and who a request acts for. Tokens are stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from innominatus.db.models import Token, utcnow
from innominatus.store import Store

ADMIN, MEMBER = "admin", "member"
ROLES = (ADMIN, MEMBER)
ADMIN_TEAM = "admin"
DEV_TOKEN = "test"  # noqa: S105 - the documented token of `serve --dev`, never accepted otherwise
CACHE_SECONDS = 1.0  # revocation and expiry hold in every process from at most this much later
_TEAM = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_DURATION = re.compile(r"^(\d+)([smhd])$")


@dataclass(frozen=True)
class Principal:
    team: str
    role: str
    token_id: str | None  # None: the dev-mode admin

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    def can_see(self, team: str | None) -> bool:
        return self.is_admin or (team is not None and team == self.team)


DEV_ADMIN = Principal(team=ADMIN_TEAM, role=ADMIN, token_id=None)


def bearer(value: object) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value."""
    if not isinstance(value, str) or not value.lower().startswith("bearer "):
        return None
    return value[7:].strip() or None


def new_token() -> str:
    return "inn_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_expiry(text: str | None) -> timedelta | None:
    """`N[smhd]` (e.g. 30m, 7d) or None for a token that never expires."""
    if text is None:
        return None
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"expires: must look like 30s, 15m, 12h or 7d, got {text!r}")
    return timedelta(seconds=int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)])


def check_team(team: str) -> str:
    if not _TEAM.match(team):
        raise ValueError(f"team: must be lowercase letters, digits, '-' and '_' (at most 63), got {team!r}")
    return team


async def create_token(
    session: AsyncSession,
    team: str,
    role: str,
    *,
    expires_in: timedelta | None = None,
    description: str | None = None,
    token: str | None = None,
) -> tuple[Token, str]:
    """A new token row; returns it and the token text, which is never stored."""
    if role not in ROLES:
        raise ValueError(f"role: must be admin or member, got {role!r}")
    check_team(team)
    text = token or new_token()
    row = Token(
        team=team,
        role=role,
        token_hash=hash_token(text),
        description=description,
        created_at=utcnow(),
        expires_at=utcnow() + expires_in if expires_in else None,
    )
    session.add(row)
    await session.flush()
    return row, text


class Authenticator:
    """Resolves a bearer token to a Principal, with a cache short enough for revocation to hold."""

    def __init__(self, store: Store, *, dev: bool = False) -> None:
        self.store = store
        self.dev = dev
        self._cache: dict[str, tuple[Principal | None, datetime | None, float]] = {}

    async def principal(self, token: str | None) -> Principal | None:
        if self.dev and (token is None or token == DEV_TOKEN):
            return DEV_ADMIN
        if not token:
            return None
        digest = hash_token(token)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and now - cached[2] < CACHE_SECONDS:
            principal, expires_at = cached[0], cached[1]
        else:
            async with self.store.session() as session:
                row = await session.scalar(select(Token).where(Token.token_hash == digest))
            principal, expires_at = None, None
            if row is not None and row.revoked_at is None:
                principal = Principal(team=row.team, role=row.role, token_id=row.id)
                expires_at = row.expires_at
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (principal, expires_at, now)
        if principal is not None and expires_at is not None and expires_at <= utcnow():
            return None
        return principal


async def bootstrap(store: Store, admin_token: str | None) -> str | None:
    """Make INNOMINATUS_ADMIN_TOKEN an admin token; with neither it nor any token, create one.

    Returns a newly created token for the caller to print once, else None.
    """
    async with store.transaction() as session:
        if admin_token:
            existing = await session.scalar(select(Token).where(Token.token_hash == hash_token(admin_token)))
            if existing is None:
                await create_token(
                    session, ADMIN_TEAM, ADMIN, token=admin_token, description="INNOMINATUS_ADMIN_TOKEN"
                )
            return None
        if await session.scalar(select(Token.id).limit(1)) is not None:
            return None
        _, text = await create_token(session, ADMIN_TEAM, ADMIN, description="created at first start")
        return text
