"""Log lines, as text (default) or as JSON lines (`INNOMINATUS_LOG_FORMAT=json`) that carry the ids of
what they are about: the HTTP request (`request_id`, also sent back as `X-Request-ID`), and in a workflow
run its `application`, `resource_id` and `workflow_id`."""

from __future__ import annotations

import json
import logging
import os
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

FORMATS = ("text", "json")
_FIELDS: ContextVar[dict[str, str] | None] = ContextVar("innominatus_log_fields", default=None)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def bind(**fields: str) -> None:
    """Add ids to every log line of the current task (and the tasks it starts)."""
    _FIELDS.set({**(_FIELDS.get() or {}), **fields})


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **(_FIELDS.get() or {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"INNOMINATUS_LOG_FORMAT: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLines() if fmt == "json" else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


class RequestId:
    """Every HTTP request and websocket gets an id: the client's `X-Request-ID` when it is a plain
    token, else a new one; it is on the request's log lines and in the response's `X-Request-ID`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        # 128 random bits as 32 hex digits, like uuid4().hex without building a UUID (a tenth of the cost)
        request_id = given if _REQUEST_ID.fullmatch(given) else os.urandom(16).hex()
        bind(request_id=request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())],
                }
            await send(message)

        await self.app(scope, receive, send_with_id)
