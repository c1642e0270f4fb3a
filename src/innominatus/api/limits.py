"""Request body limit, enforced while reading so an oversized body is never buffered whole; and a body
whose client hung up before sending it all, which is nobody to answer."""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from innominatus.api.answers import send_json


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, scope["path"])
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, scope["path"])
        except ClientDisconnect:
            pass  # gone mid-body (a closed tab, a load generator stopping): not a server error

    async def _refuse(self, send: Send, path: str) -> None:
        message = f"request body is larger than {self.max_bytes} bytes"
        if path.startswith("/api/"):  # the REST layer's error shape
            payload: dict[str, object] = {"error": message, "problems": []}
        else:
            payload = {
                "data": None,
                "errors": [{"message": message, "extensions": {"code": "PAYLOAD_TOO_LARGE"}}],
            }
        await send_json(send, 413, payload)
