"""API tokens and who a request acts for. Tokens are stored only as SHA-256 hashes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable
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
WATCH_SECONDS = 1.0  # how often the tokens of live subscriptions are checked (all of them, one query)
log = logging.getLogger(__name__)
_TEAM = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # whole string: fullmatch
_DURATION = re.compile(r"(\d+)([smhd])")


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
    match = _DURATION.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"expires: must look like 30s, 15m, 12h or 7d, got {text!r}")
    return timedelta(seconds=int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)])


def check_team(team: str) -> str:
    if not _TEAM.fullmatch(team):
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


class TokenWatch:
    """Ends the live subscriptions of one token once it is revoked or expires (events.Watch)."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        self.revoked = False
        self.users = 0
        self._ends: set[Callable[[], None]] = set()

    def attach(self, end: Callable[[], None]) -> None:
        self._ends.add(end)
        if self.revoked:
            end()

    def detach(self, end: Callable[[], None]) -> None:
        self._ends.discard(end)

    def revoke(self) -> None:
        self.revoked = True
        for end in list(self._ends):
            end()


class Authenticator:
    """Resolves a bearer token to a Principal, with a cache short enough for revocation to hold; and
    watches the tokens of live subscriptions, all of them with one query a second (not a timer each)."""

    def __init__(self, store: Store, *, dev: bool = False) -> None:
        self.store = store
        self.dev = dev
        self._cache: dict[str, tuple[Principal | None, datetime | None, float]] = {}
        self._watches: dict[str, TokenWatch] = {}
        self._watcher: asyncio.Task[None] | None = None

    def watch(self, token: str | None) -> TokenWatch | None:
        """A watch for a subscription of `token` (None when nothing can revoke it: dev mode's admin);
        give it back with `unwatch`."""
        if not token or (self.dev and token == DEV_TOKEN):
            return None
        digest = hash_token(token)
        watch = self._watches.get(digest)
        if watch is None:
            watch = self._watches[digest] = TokenWatch(digest)
        watch.users += 1
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._check_watched(), name="innominatus-token-watch")
        return watch

    def unwatch(self, watch: TokenWatch | None) -> None:
        if watch is None:
            return
        watch.users -= 1
        if watch.users <= 0 and self._watches.get(watch.digest) is watch:
            del self._watches[watch.digest]

    async def _check_watched(self) -> None:
        while self._watches:
            await asyncio.sleep(WATCH_SECONDS)
            digests = list(self._watches)
            try:
                async with self.store.session() as session:
                    rows = {
                        row.token_hash: row
                        for row in await session.scalars(select(Token).where(Token.token_hash.in_(digests)))
                    }
            except Exception:
                log.exception("checking the tokens of live subscriptions failed")
                continue
            now = utcnow()
            for digest in digests:
                row = rows.get(digest)
                if (
                    row is None
                    or row.revoked_at is not None
                    or (row.expires_at is not None and row.expires_at <= now)
                ):
                    self._cache.pop(digest, None)
                    watch = self._watches.pop(digest, None)
                    if watch is not None:
                        watch.revoke()

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher

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
