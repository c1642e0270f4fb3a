"""One subscriber's bounded queue. Filling it up ends the subscriber instead of growing memory."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")
F = TypeVar("F")


class Overflow(Exception):
    """The mailbox filled up; what was queued before has been handed out."""


class Mailbox(Generic[F, T]):
    __slots__ = ("_items", "_limit", "_waiter", "filter", "overflowed")

    def __init__(self, flt: F, limit: int) -> None:
        self.filter = flt
        self._items: deque[T] = deque()
        self._limit = limit
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False

    def put(self, item: T) -> None:
        if self.overflowed:
            return
        if len(self._items) >= self._limit:
            self.overflow()
        else:
            self._items.append(item)
            self._wake()

    def overflow(self) -> None:
        """Mark it full: once what is queued is handed out, `get` raises Overflow (also how a revoked
        token ends a subscriber, see stream.py)."""
        self.overflowed = True
        self._wake()

    async def get(self) -> T:
        if self._items:
            # Already waiting: let every other subscriber take its turn first, so one event reaches all
            # subscribers before anyone's next one (fair fan-out instead of one subscriber draining).
            await asyncio.sleep(0)
        while True:
            if self._items:
                return self._items.popleft()
            if self.overflowed:
                raise Overflow
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
