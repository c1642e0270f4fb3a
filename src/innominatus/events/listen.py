"""One LISTEN connection per replica (PostgreSQL): what other replicas announce arrives here the moment
it commits — event positions (`innominatus_events`), step events (`innominatus_steps`), cancelled
runs (`innominatus_cancel`), provider reloads (`innominatus_reload`) and who listens
(`innominatus_hello`). A notification is only news: the events table stays the source of truth,
and after the connection was lost (notifications may be missed meanwhile) `on_connect` resyncs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

EVENTS = "innominatus_events"
STEPS = "innominatus_steps"
CANCEL = "innominatus_cancel"
RELOAD = "innominatus_reload"
HELLO = "innominatus_hello"  # "<origin>": a replica listens (at connect, with every ping, and in answer
# to a replica not heard from before, so two that start together learn of each other at once)
APPLICATION_NAME = "innominatus-listen"  # how the connection shows in pg_stat_activity
PING_SECONDS = 5.0  # a silent network partition shows up as a failed ping, not as a closed socket
PEER_SECONDS = 3 * PING_SECONDS  # a replica not heard from for this long is taken to be gone
RECONNECT_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)


class Listener:
    def __init__(
        self,
        dsn: str,
        origin: str,
        handlers: dict[str, Callable[[str], None]],
        on_connect: Callable[[], Awaitable[None]],
    ) -> None:
        self._dsn = dsn
        self._origin = origin
        self._handlers = {**handlers, HELLO: self._heard}
        self._on_connect = on_connect
        self._task: asyncio.Task[None] | None = None
        self._peers: dict[str, float] = {}  # other replicas' origins → when last heard (monotonic)
        self._say_hello = asyncio.Event()

    def has_peers(self) -> bool:
        """Whether another replica listened lately (what only they use need not be sent while alone)."""
        now = time.monotonic()
        for origin, heard in list(self._peers.items()):
            if now - heard > PEER_SECONDS:
                del self._peers[origin]
        return bool(self._peers)

    def _heard(self, origin: str) -> None:
        if origin != self._origin:
            if origin not in self._peers:
                self._say_hello.set()  # it may not have heard this one yet
            self._peers[origin] = time.monotonic()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="innominatus-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._session()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)]
                failures += 1
                log.warning("listening for other replicas failed (%s); reconnecting in %ss", exc, delay)
                await asyncio.sleep(delay)

    async def _session(self) -> None:
        conn: Any = await asyncpg.connect(
            self._dsn, timeout=10, server_settings={"application_name": APPLICATION_NAME}
        )
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            for channel, handler in self._handlers.items():
                await conn.add_listener(channel, self._dispatch(handler))
            await self._on_connect()  # anything announced before LISTEN took effect is read now
            self._say_hello.set()
            while not lost.is_set():
                # The ping says hello: the other replicas learn that this one listens.
                self._say_hello.clear()
                await conn.fetchval("SELECT pg_notify($1, $2)", HELLO, self._origin, timeout=PING_SECONDS)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PING_SECONDS):
                        await _first(lost.wait(), self._say_hello.wait())
            raise ConnectionError("the listening connection was closed")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)

    @staticmethod
    def _dispatch(handler: Callable[[str], None]) -> Callable[..., None]:
        def on_notification(_conn: Any, _pid: int, channel: str, payload: str) -> None:
            try:
                handler(payload)
            except Exception:
                log.exception("handling a notification on %s failed", channel)

        return on_notification


async def _first(*waits: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
