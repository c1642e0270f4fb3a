"""The corked transport under the server's HTTP and websocket connections: a loop turn's writes leave in
one write, bytes and order unchanged, nothing held past the turn, and closing sends what is pending
first. Real sockets, and uvicorn serving through the protocols the server is started with."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
import websockets

from innominatus import cli
from innominatus.api.corked import CorkedHttpProtocol, CorkedTransport, CorkedWebSocketProtocol


class _Counted:
    """asyncio's own transport, with its write calls counted."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


_Pair = tuple[_Counted, CorkedTransport, socket.socket]


@pytest.fixture
async def pair() -> AsyncIterator[_Pair]:
    """asyncio's transport of one end of a socket pair (its writes counted), corked, and the other end;
    both ends closed afterwards."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    counted = _Counted(transport)
    try:
        yield counted, CorkedTransport(counted, loop), theirs  # type: ignore[arg-type]
    finally:
        transport.close()
        theirs.close()


async def _read(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
        if not chunk:
            break
        data += chunk
    return data


async def test_a_turns_writes_leave_in_one_write_in_order(pair: _Pair) -> None:
    counted, corked, peer = pair
    for frame in (b"one ", b"two ", bytearray(b"three ")):
        corked.write(frame)
    assert counted.writes == []  # not before the turn ends
    await asyncio.sleep(0)
    assert counted.writes == [b"one two three "]
    corked.write(b"four")
    await asyncio.sleep(0)
    assert counted.writes == [b"one two three ", b"four"]  # a later turn: a write of its own
    assert await _read(peer, 18) == b"one two three four"


async def test_writelines_and_the_end_of_the_stream_keep_the_order(pair: _Pair) -> None:
    counted, corked, peer = pair
    corked.write(b"head ")
    corked.writelines([b"a ", b"b "])
    corked.write_eof()  # what is pending goes first
    assert counted.writes == [b"head a b "]
    assert await _read(peer, 100) == b"head a b "


async def test_a_held_write_goes_out_with_the_next(pair: _Pair) -> None:
    counted, _, peer = pair
    http = CorkedTransport(counted, asyncio.get_running_loop(), hold=1)  # type: ignore[arg-type]
    http.write(b"head ")
    assert counted.writes == []
    http.write(b"body")  # ends the answer: no waiting for the turn's end
    assert counted.writes == [b"head body"]
    await asyncio.sleep(0)
    assert counted.writes == [b"head body"]
    assert await _read(peer, 9) == b"head body"


async def test_closing_sends_what_is_pending_first(pair: _Pair) -> None:
    counted, corked, peer = pair
    corked.write(b"last frame")
    corked.close()
    assert counted.is_closing()
    assert await _read(peer, 100) == b"last frame"  # then the end of the stream


async def test_an_aborted_connection_drops_what_is_pending(pair: _Pair) -> None:
    counted, corked, peer = pair
    corked.write(b"never sent")
    corked.abort()
    await asyncio.sleep(0)
    assert counted.writes == []
    assert await _read(peer, 100) == b""


async def test_empty_writes_schedule_nothing(pair: _Pair) -> None:
    counted, corked, _ = pair
    corked.write(b"")
    await asyncio.sleep(0)
    assert counted.writes == []
    assert corked.get_extra_info("socket") is not None  # the rest is the transport's own


async def _app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return
    if scope["type"] == "http":
        await receive()
        if scope["path"] == "/stream":  # a body in parts, its length not given: chunked
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for part in (b"a", b"b", b"c"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        body = f"path {scope['path']}".encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    message = await receive()
    for i in range(3):  # one turn: one write
        await send({"type": "websocket.send", "text": f"{message['text']} {i}"})
    await send({"type": "websocket.close", "code": 1000})


async def test_uvicorn_serves_http_and_websockets_through_them() -> None:
    """The protocols the server is started with, under uvicorn: keep-alive requests, a chunked body, a
    closing connection, and a websocket upgraded from an HTTP connection (handshake, frames, close)."""
    config = uvicorn.Config(
        _app,
        host="127.0.0.1",
        port=0,
        http=cli.HTTP_PROTOCOL,
        ws=cli.WEBSOCKET_PROTOCOL,
        log_level="warning",
        lifespan="off",
    )
    config.load()
    assert config.http_protocol_class is CorkedHttpProtocol
    assert config.ws_protocol_class is CorkedWebSocketProtocol
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            first, second = await http.get("/one"), await http.get("/two")  # one connection, kept alive
            streamed = await http.get("/stream")
            closing = await http.get("/last", headers={"connection": "close"})
        assert (first.text, second.text, streamed.text, closing.text) == (
            "path /one",
            "path /two",
            "abc",
            "path /last",
        )
        assert streamed.headers["transfer-encoding"] == "chunked"
        async with websockets.connect(f"ws://127.0.0.1:{port}") as client:
            await client.send("hello")
            answers = [await asyncio.wait_for(client.recv(), 5) for _ in range(3)]
            with pytest.raises(websockets.ConnectionClosedOK):
                await asyncio.wait_for(client.recv(), 5)
        assert answers == ["hello 0", "hello 1", "hello 2"]
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
