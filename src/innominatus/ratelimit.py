"""A per-token sliding-window limit on mutations (in process)."""

from __future__ import annotations

import re
import time
from collections import deque

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

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        hits = self._hits.setdefault(key, deque())
        while hits and now - hits[0] >= self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True
