"""`serve --dev` has no tokens, so a browser page on another site must not be able to reach it: requests
must be addressed to loopback by name (a rebound DNS name resolving to 127.0.0.1 carries its own `Host`),
and a browser's `Origin`, when sent, must be loopback too (a page elsewhere opening a websocket here)."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from innominatus.api.answers import send_json

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _host_of(authority: str) -> str | None:
    """The host of `host[:port]` or `[v6][:port]`, lowercased; None when it cannot be read."""
    try:
        parsed = urlsplit(f"//{authority}")
        return parsed.hostname  # lowercased, brackets removed
    except ValueError:
        return None


class LoopbackOnly:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        problem = self._problem(headers.get(b"host"), headers.get(b"origin"))
        if problem is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4403, "reason": problem})
        else:
            await send_json(send, 403, {"error": problem, "problems": []})

    @staticmethod
    def _problem(host: str | None, origin: str | None) -> str | None:
        if host is None or _host_of(host) not in LOOPBACK_HOSTS:
            return f"dev mode answers only requests addressed to 127.0.0.1, localhost or [::1], not {host!r}"
        if origin is not None and origin != "null":
            origin_host = urlsplit(origin).hostname if "://" in origin else None
            if origin_host not in LOOPBACK_HOSTS:
                return f"dev mode answers only pages served from loopback, not origin {origin!r}"
        return None
