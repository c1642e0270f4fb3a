"""Step events for the other replicas (PostgreSQL): a step's status changes and log lines are live only
(the step rows hold the record), so they travel as notifications. Events are packed into as few NOTIFYs
as fit (a payload holds under 8,000 bytes) and sent by one statement at a time: under load one round trip
carries many events; the buffer is bounded."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from innominatus.events.listen import STEPS
from innominatus.events.types import StepEvent

log = logging.getLogger(__name__)

PAYLOAD_BYTES = 7_500  # PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more
LINE_BYTES = 6_000  # a longer log line is cut in what other replicas stream (the step row keeps it whole)
BUFFER = 10_000  # events waiting to be sent; beyond, the oldest are dropped (and that is logged)
_SEND = text("SELECT pg_notify(:channel, p) FROM unnest(CAST(:payloads AS text[])) AS p")


def encode(event: StepEvent, room: int = PAYLOAD_BYTES - 200) -> str:
    """One event as compact JSON of at most `room` bytes (a long log line is cut to fit)."""
    line = event.log_line
    limit = LINE_BYTES
    while True:
        if line is not None and len(line.encode()) > limit:
            line = line.encode()[:limit].decode(errors="ignore") + " [... cut for other replicas]"
        item = {
            "w": event.workflow_id,
            "a": event.application_name,
            "t": event.team,
            "s": event.step_name,
            "st": event.status,
            "n": event.attempts,
            "l": line,
            "at": event.at.isoformat(),
        }
        text_ = json.dumps(item, separators=(",", ":"), ensure_ascii=False)
        if len(text_.encode()) <= room or line is None or limit < 64:
            return text_
        limit //= 2  # escaping made it longer than it looked


def decode(item: dict[str, Any]) -> StepEvent:
    return StepEvent(
        workflow_id=item["w"],
        application_name=item["a"],
        team=item["t"],
        step_name=item["s"],
        status=item["st"],
        attempts=item["n"],
        log_line=item["l"],
        at=datetime.fromisoformat(item["at"]),
    )


def unpack(payload: str) -> tuple[str, list[StepEvent]]:
    message = json.loads(payload)
    return message["o"], [decode(item) for item in message["e"]]


class StepRelay:
    def __init__(self, engine: AsyncEngine, origin: str) -> None:
        self._engine = engine
        self._origin = origin
        self._waiting: deque[str] = deque()
        self._sending: asyncio.Task[None] | None = None
        self._dropped = 0
        self.wanted: Callable[[], bool] = lambda: True  # whether any replica would receive them

    def push(self, event: StepEvent) -> None:
        if not self.wanted():
            return
        if len(self._waiting) >= BUFFER:
            self._waiting.popleft()
            self._dropped += 1
        self._waiting.append(encode(event))
        if self._sending is None or self._sending.done():
            self._sending = asyncio.ensure_future(self._send())

    def close(self) -> None:
        if self._sending is not None:
            self._sending.cancel()

    def _payloads(self) -> list[str]:
        payloads: list[str] = []
        batch: list[str] = []
        size = 0
        head = len(json.dumps({"o": self._origin, "e": []}))
        while self._waiting:
            item = self._waiting.popleft()
            if batch and head + size + len(item.encode()) + 1 > PAYLOAD_BYTES:
                payloads.append(self._wrap(batch))
                batch, size = [], 0
            batch.append(item)
            size += len(item.encode()) + 1
        if batch:
            payloads.append(self._wrap(batch))
        return payloads

    def _wrap(self, items: list[str]) -> str:
        return '{"o":' + json.dumps(self._origin) + ',"e":[' + ",".join(items) + "]}"

    async def _send(self) -> None:
        while self._waiting:
            if self._dropped:
                log.warning(
                    "%d step events were not sent to other replicas (too many waiting)", self._dropped
                )
                self._dropped = 0
            payloads = self._payloads()
            try:
                async with self._engine.connect() as conn:
                    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    await conn.execute(_SEND, {"channel": STEPS, "payloads": payloads})
            except Exception:
                log.exception("sending %d step event payload(s) to other replicas failed", len(payloads))
