"""One LISTEN connection per replica (PostgreSQL): what other replicas announce arrives here the moment
it commits — event positions (`innominatus_events`), step events (`innominatus_steps`), cancelled
runs (`innominatus_cancel`) and provider reloads (`innominatus_reload`). A notification is only news: the events table stays the source of truth,
and after the connection was lost (notifications may be missed meanwhile) `on_connect` resyncs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

EVENTS = "innominatus_events"
STEPS = "innominatus_steps"
CANCEL = "innominatus_cancel"
RELOAD = "innominatus_reload"
APPLICATION_NAME = "innominatus-listen"  # how the connection shows in pg_stat_activity
PING_SECONDS = 5.0  # a silent network partition shows up as a failed ping, not as a closed socket
RECONNECT_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)


class Listener:
    def __init__(
        self,
        dsn: str,
        handlers: dict[str, Callable[[str], None]],
        on_connect: Callable[[], Awaitable[None]],
    ) -> None:
        self._dsn = dsn
        self._handlers = handlers
        self._on_connect = on_connect
        self._task: asyncio.Task[None] | None = None

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
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PING_SECONDS):
                        await lost.wait()
                if not lost.is_set():
                    await conn.fetchval("SELECT 1", timeout=PING_SECONDS)
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
