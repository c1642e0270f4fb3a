"""A per-token sliding-window limit on mutations: in process for the embedded database, and for the whole
system on PostgreSQL, where replicas count in one table (a token spreading its mutations over three
replicas gets the same limit as on one)."""

from __future__ import annotations

import re
import time
from collections import deque

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from innominatus.db import direct

_SPEC = re.compile(r"(\d+)/(\d+(?:\.\d+)?)")


def parse_rate(text: str) -> tuple[int, float]:
    match = _SPEC.fullmatch(text.strip())
    if not match or int(match.group(1)) < 1 or float(match.group(2)) <= 0:
        raise ValueError(f"INNOMINATUS_RATE_LIMIT: must be N/SECONDS like 600/60, got {text!r}")
    return int(match.group(1)), float(match.group(2))


class RateLimiter:
    def __init__(self, limit: int, per_seconds: float) -> None:
        self.limit = limit
        self.window = per_seconds
        self._hits: dict[str, deque[float]] = {}

    async def allow(self, key: str) -> bool:
        now = time.monotonic()
        hits = self._hits.setdefault(key, deque())
        while hits and now - hits[0] >= self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True


# One round trip: count this hit in the current window and read the previous one. The rate is the
# sliding-window estimate: the previous window's hits weighted by how much of it still overlaps, plus
# this window's. Windows are numbered by the database's clock (replicas' clocks may differ).
# A count lost in a database crash costs nothing, so its commit does not wait for the WAL to reach the
# disk (`synchronous_commit` off for this statement's own transaction only): 0.47 → 0.26 ms a hit here.
_HIT = text(
    """
WITH clock AS (SELECT extract(epoch FROM statement_timestamp()) / :per AS t),
quick AS (SELECT set_config('synchronous_commit', 'off', true)),
hit AS (
  INSERT INTO rate_hits (key, bucket, hits) SELECT :key, floor(t)::bigint, 1 FROM clock, quick
  ON CONFLICT (key, bucket) DO UPDATE SET hits = rate_hits.hits + 1
  RETURNING bucket, hits
)
SELECT hit.hits AS current,
       coalesce((SELECT r.hits FROM rate_hits AS r WHERE r.key = :key AND r.bucket = hit.bucket - 1), 0)
         AS previous,
       (SELECT t FROM clock) - hit.bucket AS elapsed
FROM hit
"""
)
_FORGET = text(
    "DELETE FROM rate_hits WHERE bucket < floor(extract(epoch FROM statement_timestamp()) / :per) - 1"
)
FORGET_EVERY = 1000  # hits between removals of windows nobody reads any more
FORGET_AFTER_WINDOWS = 10  # ... or windows, whichever comes first (a quiet replica prunes too)


class SharedRateLimiter:
    """The same limit for the whole system (PostgreSQL): every replica counts in `rate_hits`. Refused
    hits count too, so a client that keeps hammering stays refused until it slows down."""

    def __init__(self, engine: AsyncEngine, limit: int, per_seconds: float) -> None:
        self.limit = limit
        self.window = per_seconds
        self._engine = engine
        self._hits = 0
        self._forgot_at = time.monotonic()

    async def allow(self, key: str) -> bool:
        self._hits += 1
        now = time.monotonic()
        forget = self._hits % FORGET_EVERY == 0 or now - self._forgot_at > FORGET_AFTER_WINDOWS * self.window
        (row,) = await direct.autocommit_rows(self._engine, _HIT, {"key": key, "per": self.window})
        if forget:
            self._forgot_at = now
            await direct.autocommit_rows(self._engine, _FORGET, {"per": self.window})
        overlap = max(0.0, 1.0 - float(row.elapsed))
        return row.previous * overlap + row.current <= self.limit


def rate_limiter(engine: AsyncEngine, limit: int, per_seconds: float) -> RateLimiter | SharedRateLimiter:
    if engine.dialect.name == "postgresql":
        return SharedRateLimiter(engine, limit, per_seconds)
    return RateLimiter(limit, per_seconds)
