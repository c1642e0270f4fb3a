"""SQLite's WAL checkpoints, in a thread of their own.

By default the connection whose commit takes the write-ahead log past 1,000 pages copies the log back
into the database file, and syncs it, inside that commit. Our writers run in the event loop's thread
(inline_sqlite.py), so each such commit stalled every request and subscription of the server: over 2,000
submissions, commits took 0.17-0.19 ms at the median, 3-7 ms at p99 and up to 66-388 ms, and the slowest
1% were a third to a half of all commit time.

So this thread checkpoints, on a connection of its own, while the loop goes on (sqlite3 lets go of the
GIL while SQLite works). Every `interval` a PASSIVE checkpoint copies what it can without waiting for
anyone. That alone does not bound the log: SQLite starts it over only when a writer begins while every
frame is copied, and under steady writes new frames arrive while a pass copies. So once the log passes
`restart_pages`, a RESTART checkpoint holds writers off for the moment it takes to copy the few frames
the last pass left (waiting at most _WAIT_FOR_READERS_MS for readers), and the next writer starts the log
over; the loop's writers meanwhile meet SQLITE_BUSY and retry with asyncio.sleep. Writers keep SQLite's
own checkpoint only as a backstop far beyond that bound (BACKSTOP_PAGES, database.py), for when this
thread cannot keep up. The same 2,000 submissions with it: commits' p99 0.39-0.49 ms, the longest 0.8-26 ms
(a writer waiting, with the loop running, for a RESTART), and half the commit time in all.
When the last connection closes SQLite checkpoints and removes the log itself, so an engine used without
a Checkpointer (a migration) loses nothing.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

INTERVAL_S = 0.25
RESTART_PAGES = 4_096  # 16 MiB of 4 KiB pages
BACKSTOP_PAGES = 4 * RESTART_PAGES
# How long a RESTART checkpoint waits for readers. Writers are held off meanwhile, so it is short; one
# that gives up is tried again a pass later.
_WAIT_FOR_READERS_MS = 100


class Checkpointer:
    def __init__(
        self,
        database: str,
        *,
        uri: bool = False,
        interval: float = INTERVAL_S,
        restart_pages: int = RESTART_PAGES,
    ) -> None:
        self._database = database
        self._uri = uri
        self._interval = interval
        self._restart_pages = restart_pages
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="innominatus-wal-checkpoints", daemon=True)
        self.checkpoints = 0  # completed passes, for tests and curiosity
        self._failing = False  # a failure is logged once, not every pass until it heals

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._database, uri=self._uri, timeout=_WAIT_FOR_READERS_MS / 1000)
        except sqlite3.Error:
            log.exception(
                "cannot open %s for WAL checkpoints; the writers' own (at BACKSTOP_PAGES) take over",
                self._database,
            )
            return
        try:
            while not self._stop.wait(self._interval):
                self._checkpoint(conn)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            _busy, pages, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if pages > self._restart_pages:
                conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            self.checkpoints += 1
            self._failing = False
        except sqlite3.Error as exc:
            busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy and not self._failing:  # busy now is fine later
                log.warning("WAL checkpoint of %s failed (retrying): %s", self._database, exc)
                self._failing = True
