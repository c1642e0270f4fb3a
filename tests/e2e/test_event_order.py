"""Events under concurrent writers: 20 clients submit at once while a subscriber watches. Every state
change arrives once, in strictly increasing sequence with no gap, and a replay from afterSequence: 0
returns exactly what was streamed live."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import fresh_pg_database
from tests.e2e.server import ADMIN_TOKEN, Server, run_server

SUBMITTERS = 20
SPECS_EACH = 3
SUBMIT = "mutation($spec: String!) { submitSpec(spec: $spec) { resources { id } } }"
WATCH = "subscription($after: Int) { resourceStateChanged(afterSequence: $after) { sequence resourceId toState } }"


def spec(app: str) -> str:
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\ncontainers:\n  main:\n    image: nginx\n"
        "resources:\n  database:\n    type: postgres-mock\n    properties:\n      db_name: orders\n"
    )


@pytest.fixture(scope="module")
def pg_server_process(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    url = fresh_pg_database(pg_server).replace("postgresql://", "postgresql+asyncpg://", 1)
    with run_server(tmp_path_factory.mktemp("order"), database_url=url) as srv:
        yield srv


class Watcher:
    """A raw graphql-transport-ws subscriber that records every event it receives."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, server: Server, after: int | None) -> Watcher:
        ws = await websockets.connect(server.websocket, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {ADMIN_TOKEN}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(
            json.dumps(
                {"id": "1", "type": "subscribe", "payload": {"query": WATCH, "variables": {"after": after}}}
            )
        )
        return cls(ws)

    async def until(self, done: Any, timeout: float = 120) -> None:
        async with asyncio.timeout(timeout):
            while not done(self.events):
                message = json.loads(await self.ws.recv())
                assert message["type"] == "next", message
                assert "errors" not in message["payload"], message
                self.events.append(message["payload"]["data"]["resourceStateChanged"])


@pytest.mark.postgres
async def test_concurrent_submitters_events_in_order_without_gaps_and_replay_equals_live(
    pg_server_process: Server,
) -> None:
    server = pg_server_process
    live = await Watcher.open(server, after=0)  # replays nothing yet, then streams live
    await asyncio.sleep(0.3)  # the subscribe message is processed before anything happens

    async def submitter(index: int, client: httpx.AsyncClient) -> list[str]:
        ids = []
        for n in range(SPECS_EACH):
            answer = (
                await client.post(
                    server.graphql, json={"query": SUBMIT, "variables": {"spec": spec(f"order-{index}-{n}")}}
                )
            ).json()
            assert "errors" not in answer, answer
            ids.append(answer["data"]["submitSpec"]["resources"][0]["id"])
        return ids

    async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        results = await asyncio.gather(*(submitter(i, client) for i in range(SUBMITTERS)))
    submitted = {rid for ids in results for rid in ids}
    assert len(submitted) == SUBMITTERS * SPECS_EACH

    def all_active(events: list[dict[str, Any]]) -> bool:
        return {e["resourceId"] for e in events if e["toState"] == "ACTIVE"} >= submitted

    await live.until(all_active)
    sequences = [e["sequence"] for e in live.events]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences))), "a gap or a repeat"
    per_resource: dict[str, list[str]] = {}
    for event in live.events:
        per_resource.setdefault(event["resourceId"], []).append(event["toState"])
    assert set(per_resource) == submitted
    assert all(states == ["REQUESTED", "PROVISIONING", "ACTIVE"] for states in per_resource.values())
    await live.ws.close()

    replay = await Watcher.open(server, after=0)
    await replay.until(lambda events: len(events) >= len(live.events))
    assert replay.events == live.events
    await replay.ws.close()
