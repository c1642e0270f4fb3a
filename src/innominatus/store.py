"""The unit of work: sessions and transactions; a transaction that wrote events runs the sequencer
after it commits, which publishes them."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from innominatus.db.database import checkpointer, close, inline_read_engine, read_engine, sessionmaker
from innominatus.db.models import Event, Resource
from innominatus.db.writes import write_pending
from innominatus.events import EventHub, Sequencer, StepEvent
from innominatus.events.relay import StepRelay
from innominatus.lifecycle import WROTE_EVENTS
from innominatus.sealing import SecretBox

_ON_END = "innominatus.on_end"  # session.info: hooks of Store.on_end


@functools.lru_cache(maxsize=64)
def _record(fields: tuple[str, ...]) -> type[tuple[Any, ...]]:
    return collections.namedtuple("Record", fields)  # type: ignore[misc]


def _records(result: Any) -> list[Any]:
    record = _record(tuple(result.keys()))
    return [tuple.__new__(record, row) for row in result.all()]


class Store:
    def __init__(
        self, engine: AsyncEngine, hub: EventHub | None = None, box: SecretBox | None = None
    ) -> None:
        self.engine = engine
        self.hub = hub or EventHub()
        # Seals secret outputs at rest; without a configured key (tests), one that lives as long as this store.
        self.box = box or SecretBox(Fernet.generate_key())
        self._sessions = sessionmaker(engine)
        self._reader = read_engine(engine)
        self._read_sessions = sessionmaker(self._reader)
        self._inline_reader = inline_read_engine(engine)
        # This process among the replicas sharing the database: its engine's lease owner and the origin
        # of its notifications. Unique per process start (a restarted replica must not own old leases).
        self.replica = f"{socket.gethostname()[:40]}-{uuid.uuid4().hex[:8]}"
        self.sequencer = Sequencer(engine, self.rows, self.hub, origin=self.replica)
        self._step_relay = StepRelay(engine, self.replica) if engine.dialect.name == "postgresql" else None
        # SQLite lets one writer in at a time and makes the others sleep and retry (up to 100 ms a
        # nap); queueing this process's writers here hands the lock over at once instead.
        self._writers = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        self._checkpoints = checkpointer(engine)
        if self._checkpoints is not None:
            self._checkpoints.start()

    @property
    def engines(self) -> tuple[Engine, ...]:
        """Every engine this store talks through, as the sync engines that run the statements (SQLite
        has separate ones for reads)."""
        shared_pool = (
            self._reader.sync_engine.pool is self.engine.sync_engine.pool
        )  # PostgreSQL's autocommit view
        engines = (
            [self.engine.sync_engine] if shared_pool else [self.engine.sync_engine, self._reader.sync_engine]
        )
        if self._inline_reader is not None:
            engines.append(self._inline_reader)
        return tuple(engines)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session for reads (it never waits for writers); each concurrent resolver gets its own."""
        session = self._read_sessions()
        cleanly = False
        try:
            yield session
            cleanly = self.dialect == "postgresql"  # an autocommit connection: nothing to roll back
        finally:
            await close(session, cleanly=cleanly)

    async def rows(self, query: Any, parameters: dict[str, Any] | None = None) -> list[Any]:
        """A Core query's rows, read without the ORM's machinery (lists that are only read), as named
        tuples: reading a field of one costs a tenth of reading it from SQLAlchemy's Row."""
        if self._inline_reader is not None:
            try:
                with self._inline_reader.connect() as sync_conn:
                    return _records(sync_conn.execute(query, parameters))
            except OperationalError as exc:
                if getattr(exc.orig, "sqlite_errorname", None) != "SQLITE_BUSY":
                    raise
        conn = await self._reader.connect().start()
        cleanly = False
        try:
            found = _records(await conn.execute(query, parameters))
            cleanly = self.dialect == "postgresql"  # an autocommit connection: nothing to roll back
            return found
        finally:
            await close(conn, cleanly=cleanly)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One transaction; the state events it wrote are numbered and published once it has committed."""
        async with self._writers or contextlib.nullcontext():
            session = self._sessions()
            committed = released = False
            try:
                try:
                    async with session.begin():
                        yield session
                        written = session.info.get(WROTE_EVENTS, ())
                        numbered = bool(written) and self.sequencer.in_transaction
                        if numbered:
                            await self.sequencer.number(session, written)
                        await write_pending(session, last=True)  # without the ORM's flush (db/writes.py)
                        if numbered:
                            released = await self.sequencer.release(session, written)
                    committed = True
                finally:
                    if self.sequencer.in_transaction:
                        self.sequencer.settle(committed)
                    hooks = session.info.get(_ON_END, ())
                    session.info.clear()
                    for hook in hooks:
                        hook(committed)
            finally:
                # PostgreSQL: the committed connection has nothing to roll back. (SQLite's writer keeps the
                # shielded close, whose loop turns also let readers in between its back-to-back writes.)
                await close(session, cleanly=committed and self.dialect == "postgresql")
            if written:
                # SQLite: still in the writers' queue, so events are published in commit order.
                await self.sequencer.flush(written, released)

    async def publish_written(self, written: list[tuple[Event, Resource]]) -> None:
        """Events a statement wrote and committed on its own, outside `transaction` (PostgreSQL): numbered
        and published as a transaction's are."""
        await self.sequencer.flush(written)

    def publish_step(self, event: StepEvent) -> None:
        """A step event of a run in this process: to this process's subscribers, and to the other
        replicas' (PostgreSQL)."""
        self.hub.publish_step(event)
        if self._step_relay is not None:
            self._step_relay.push(event)

    def relay_steps_while(self, condition: Callable[[], bool]) -> None:
        """Send step events to other replicas only while `condition()` holds (some replica listens)."""
        if self._step_relay is not None:
            self._step_relay.wanted = condition

    @staticmethod
    def on_end(session: AsyncSession, hook: Callable[[bool], None]) -> None:
        """Call `hook(committed)` when this transaction has ended, before its events are published."""
        session.info.setdefault(_ON_END, []).append(hook)

    async def close(self) -> None:
        self.sequencer.close()
        if self._checkpoints is not None:
            await asyncio.to_thread(self._checkpoints.stop)
        if self._step_relay is not None:
            self._step_relay.close()
        if self._reader.sync_engine.pool is not self.engine.sync_engine.pool:
            await self._reader.dispose()
        if self._inline_reader is not None:
            self._inline_reader.dispose()
        await self.engine.dispose()
