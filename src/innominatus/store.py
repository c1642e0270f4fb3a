"""The unit of work: sessions and transactions, and publication of their events after commit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from innominatus.db.database import sessionmaker
from innominatus.events import EventHub, StateEvent
from innominatus.lifecycle import PENDING_EVENTS, lock_sequence
from innominatus.sealing import SecretBox


class Store:
    def __init__(
        self, engine: AsyncEngine, hub: EventHub | None = None, box: SecretBox | None = None
    ) -> None:
        self.engine = engine
        self.hub = hub or EventHub()
        # Seals secret outputs at rest; without a configured key (tests), one that lives as long as this store.
        self.box = box or SecretBox(Fernet.generate_key())
        self._sessions = sessionmaker(engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session for reads; each concurrent resolver gets its own."""
        async with self._sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self, *, sequenced: bool = False) -> AsyncIterator[AsyncSession]:
        """One transaction; the state events it wrote are published only once it has committed.

        `sequenced`: it will change resource states, so it takes the event-order lock first.
        """
        async with self._sessions() as session:
            async with session.begin():
                if sequenced:
                    await lock_sequence(session)
                yield session
            pending = session.info.pop(PENDING_EVENTS, [])
            session.info.clear()
        if pending:
            self.hub.publish(StateEvent.from_row(row) for row in pending)

    async def close(self) -> None:
        await self.engine.dispose()
