"""The protocols the server speaks: uvicorn's httptools HTTP and sans-I/O websocket ones, except that what
a connection writes in one turn of the event loop leaves in one write, at the end of that turn.

Why: each write is a system call that wakes the client's side on the other core, which on the 2-core
benchmark machine cost about as much as preparing a small answer.
- Events are published in batches (one numbering pass gives positions to every event committed
  meanwhile, events/sequencer.py), and a subscription sends each of its batch's events as a frame of
  its own, one after another with no wait between: written together, a batch costs one write.
- uvicorn writes an HTTP response's head and its body apart: together, one write. An HTTP connection
  holds one write at most, so that the body, which ends the response, sends both at once: an answer
  never waits for the turn to end (its client may be waiting for nothing else).
Nothing is held back past the turn that wrote it, and the bytes and their order are the same.
"""

from __future__ import annotations

import asyncio
from asyncio import BaseTransport, Transport
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class CorkedTransport:
    """A transport whose writes in one loop turn are joined and written once, at the turn's end, or
    as soon as more than `hold` writes wait (None: no limit). Closing (or ending the stream) writes what
    is pending first: a close frame is the last thing written. Everything else is the transport's own."""

    __slots__ = ("_hold", "_loop", "_pending", "_transport")

    def __init__(
        self, transport: Transport, loop: asyncio.AbstractEventLoop, hold: int | None = None
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._hold = hold
        self._pending: list[bytes] = []

    @property
    def transport(self) -> Transport:
        return self._transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))
        if self._hold is not None and len(self._pending) > self._hold:
            self.flush()

    def writelines(self, data: Any) -> None:
        for chunk in data:
            self.write(chunk)

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

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _corked(transport: BaseTransport, hold: int | None) -> Transport:
    if isinstance(transport, CorkedTransport):  # an HTTP connection upgraded to a websocket
        transport.flush()
        transport = transport.transport
    return cast(Transport, CorkedTransport(cast(Transport, transport), asyncio.get_running_loop(), hold))


class CorkedHttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(_corked(transport, hold=1))


class CorkedWebSocketProtocol(WebSocketsSansIOProtocol):
    def connection_made(self, transport: BaseTransport) -> None:
        super().connection_made(_corked(transport, hold=None))
