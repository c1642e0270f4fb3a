"""A JSON answer sent straight from ASGI middleware, before any route runs (limits, loopback)."""

from __future__ import annotations

import json

from starlette.types import Send


async def send_json(send: Send, status: int, payload: object) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
