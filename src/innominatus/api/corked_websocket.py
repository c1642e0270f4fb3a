"""The websocket protocol the server speaks: uvicorn's sans-I/O one, except that the frames a connection
writes in one turn of the event loop leave in one write, at the end of that turn.

Why: events are published in batches (one numbering pass gives positions to every event committed
meanwhile, events/sequencer.py), and a subscription sends each of its batch's events as a frame of its
own, one after another with no wait between. Each write is a system call that wakes the client's side
on the other core, which on the 2-core benchmark machine cost about as much as preparing the event.
Written together, a batch costs one. Nothing is held back past the turn that wrote it, and the bytes
and their order are the same.
"""

from __future__ import annotations

import asyncio
from asyncio import BaseTransport, Transport
from typing import Any, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class CorkedTransport:
    """A transport whose writes in one loop turn are joined and written once, at the turn's end. Closing
    writes what is pending first (a close frame is the last thing written); everything else is the
    transport's own."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CorkedWebSocketProtocol(WebSocketsSansIOProtocol):
    def connection_made(self, transport: BaseTransport) -> None:
        corked = CorkedTransport(cast(Transport, transport), asyncio.get_running_loop())
        super().connection_made(cast(Transport, corked))
